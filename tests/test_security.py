"""Security: no unsafe calls in the project's Python sources, safe YAML, and archive extraction that cannot escape.

The source check parses every module of llara/, tasks/, flows/ and bench/ (AST, so ``model.eval()`` is not a
builtin ``eval(``) and lists each finding as ``path:line: what``. It is itself tested on a snippet with every fault.
"""

from __future__ import annotations

import ast
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from llara.data.sources import safe_extract
from llara.errors import InputError

SOURCE_DIRS = ("llara", "tasks", "flows", "bench")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Findings ``file:line: what`` for the forbidden patterns."""
    found: list[str] = []
    tree = ast.parse(source, filename)

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            flag(node, f"imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in ("eval", "exec", "builtins.eval", "builtins.exec", "__import__"):
                flag(node, f"calls {name}()")
            if name == "torch.load" or (last == "load" and name.startswith("torch.")):
                if not _is_true(getattr(_keyword(node, "weights_only"), "value", None)):
                    flag(node, "torch.load without weights_only=True")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
                flag(node, f"calls {name}")
            if name in ("yaml.load", "yaml.load_all"):
                loader = _keyword(node, "Loader") or (ast.keyword("Loader", node.args[1]) if len(node.args) > 1 else None)
                if loader is None or _dotted(loader.value).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                    flag(node, f"{name} without a safe Loader")
            if last in ("read_pickle", "to_pickle") or (last == "load" and name.startswith(("np.", "numpy."))
                                                        and _is_true(getattr(_keyword(node, "allow_pickle"), "value", None))):
                flag(node, f"{name} unpickles")
            shell = _keyword(node, "shell")
            if shell is not None and not (isinstance(shell.value, ast.Constant) and shell.value.value is False):
                flag(node, f"{name}(shell=...) runs a shell")
            if name in ("os.system", "os.popen"):
                flag(node, f"calls {name}")
            if _is_true(getattr(_keyword(node, "trust_remote_code"), "value", None)):
                flag(node, "trust_remote_code=True")
            verify = _keyword(node, "verify")
            if verify is not None and isinstance(verify.value, ast.Constant) and verify.value.value is False:
                flag(node, "TLS verification disabled")
            if last == "extractall" and not filename.endswith("llara/data/sources.py"):
                flag(node, "extractall outside llara.data.sources.safe_extract")
        elif isinstance(node, ast.arguments):
            names = node.posonlyargs + node.args
            for arg, default in zip(names[len(names) - len(node.defaults):], node.defaults):
                if arg.arg == "trust_remote_code" and not (isinstance(default, ast.Constant) and default.value is False):
                    flag(default, "trust_remote_code defaults to something other than False")
            for arg, default in zip(node.kwonlyargs, node.kw_defaults):
                if arg.arg == "trust_remote_code" and default is not None and not (
                    isinstance(default, ast.Constant) and default.value is False
                ):
                    flag(default, "trust_remote_code defaults to something other than False")
        elif isinstance(node, ast.AnnAssign) and _dotted(node.target) == "trust_remote_code":
            if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is False):
                flag(node, "trust_remote_code field defaults to something other than False")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "0.0.0.0" in node.value:
            flag(node, "binds or points to 0.0.0.0 (all interfaces)")
    return found


BAD_SNIPPET = '''
import pickle
from joblib import dump
import torch, yaml, subprocess, os, numpy as np
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.full_load(text)
eval(config["expr"])
exec(code)
subprocess.run(cmd, shell=True)
os.system(cmd)
np.load("x.npy", allow_pickle=True)
AutoModel.from_pretrained(path, trust_remote_code=True)
def load(path, trust_remote_code=True): ...
class Settings:
    trust_remote_code: bool = True
app.run(host="0.0.0.0")
requests.get(url, verify=False)
zipfile.ZipFile(p).extractall(d)
'''

GOOD_SNIPPET = '''
import torch, yaml, subprocess
torch.load("m.pt", weights_only=True, map_location="cpu")
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
model.eval()
pl.col("x").list.eval(pl.element())
subprocess.run(["dvc", "repro"], check=True)
AutoModel.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
def load(path, *, trust_remote_code: bool = False): ...
class Settings:
    trust_remote_code: bool = False
app.run(host="127.0.0.1")
'''


def test_the_checker_finds_every_fault_and_nothing_in_safe_code():
    findings = unsafe_calls(BAD_SNIPPET)
    assert len(findings) == 18, "\n".join(findings)
    lines = {int(f.split(":")[1]) for f in findings}
    assert lines == set(range(2, 22)) - {4, 17}, findings  # every line with a fault, none without
    assert unsafe_calls(GOOD_SNIPPET) == []


def python_sources(repo_root: Path) -> list[Path]:
    return sorted(p for d in SOURCE_DIRS if (repo_root / d).is_dir() for p in (repo_root / d).rglob("*.py"))


def test_project_sources_have_no_unsafe_calls(repo_root):
    sources = python_sources(repo_root)
    assert len(sources) > 10
    findings = [f for path in sources for f in unsafe_calls(path.read_text(), str(path.relative_to(repo_root)))]
    assert findings == [], "\n".join(findings)


def test_params_do_not_enable_remote_code(repo_root):
    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{key}.{k}" if key else str(k))
        else:
            yield key, node

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert [k for k, v in walk(params) if k.endswith("trust_remote_code") and v is not False] == []
    assert [k for k, v in walk(params) if isinstance(v, str) and "0.0.0.0" in v] == []


def test_params_yaml_with_python_tags_is_rejected_not_run(tmp_path):
    from tasks.params import load_params

    marker = tmp_path / "pwned"
    path = tmp_path / "params.yaml"
    path.write_text(f'split: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(InputError, match="params.yaml: not valid YAML"):
        load_params(path)
    assert not marker.exists()


# ------------------------------------------------------------------ archive extraction


def crafted_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    """(name, data, unix mode or None) members; names are written verbatim (no normalization by zipfile)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo("placeholder")
            info.filename = name  # bypass ZipInfo's own sanitizing of the name
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


EVIL = {
    "dot-dot": [("ml-100k/u.data", b"ok", None), ("../evil.txt", b"x", None)],
    "nested-dot-dot": [("a/b/../../../evil.txt", b"x", None)],
    "absolute": [("/tmp/llara-evil-absolute.txt", b"x", None)],
    "backslash": [("..\\evil.txt", b"x", None)],
    "symlink": [("ml-100k/link", b"/etc/passwd", stat.S_IFLNK | 0o777)],
}


@pytest.mark.parametrize("kind", sorted(EVIL))
def test_extraction_refuses_members_outside_the_target(tmp_path, kind):
    archive = crafted_zip(tmp_path / "evil.zip", EVIL[kind])
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(InputError) as info:
        safe_extract(archive, dest)
    assert info.value.where == str(archive) and EVIL[kind][-1][0] in info.value.what
    assert list(dest.iterdir()) == []  # every member is checked before anything is written
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["dest"]
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/llara-evil-absolute.txt").exists()


def test_extraction_refuses_a_zip_bomb_and_accepts_a_normal_archive(tmp_path):
    archive = crafted_zip(tmp_path / "big.zip", [("a.bin", b"\0" * 100_000, None)])
    with pytest.raises(InputError, match="more than the 1000 allowed"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    good = crafted_zip(tmp_path / "good.zip", [("ml-100k/u.data", b"1\t2\t3\t4\n", 0o100644), ("ml-100k/sub/x", b"x", None)])
    safe_extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "ml-100k" / "u.data").read_bytes() == b"1\t2\t3\t4\n"
    assert (tmp_path / "out" / "ml-100k" / "sub" / "x").is_file()
