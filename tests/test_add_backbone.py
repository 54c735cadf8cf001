"""Adding a backbone is one registry entry (docs/recommenders.md, "Add a backbone"): a toy family registered in
``FAMILIES`` alone is accepted by params validation, the `llara` CLI (its choices, a real pretrain + export + load),
the stages' arguments and DVC's matrix (`dvc stage list` in a real DVC repo with the backbone in params.yaml)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from _flow_helpers import dvc
from llara.errors import InputError, require_range
from llara.recommenders import load_recommender
from llara.recommenders.base import SequentialRecommender
from llara.recommenders.config import BackboneConfig
from llara.recommenders.registry import FAMILIES, Family
from llara.recommenders.registry import family as find_family

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ToyConfig(BackboneConfig):
    decay: float = 0.5  # weight of each older item relative to the next one

    def validate(self) -> None:
        super().validate()
        require_range("decay", self.decay, 0, 1, low_open=True)


class ToyRec(SequentialRecommender):
    """Exponentially weighted mean of the history's item embeddings."""

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.out = torch.nn.Linear(config.hidden, config.hidden)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        weights = self.config.decay ** torch.arange(seqs.shape[1] - 1, -1, -1, dtype=torch.float32)
        weights = weights * (seqs != 0)
        pooled = (self.item_emb(seqs) * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-6)
        return self.out(pooled)


@pytest.fixture
def toy(monkeypatch):
    """The one place a backbone is added: an entry in the registry."""
    monkeypatch.setitem(FAMILIES, "toy", Family(ToyConfig, f"{__name__}:ToyRec"))
    return "toy"


def repo_params(backbones: list[str], **sections) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"]["backbones"] = backbones
    params["pretrain"].update(sections)
    return params


def test_params_validation_accepts_a_registered_backbone(toy):
    from tasks.params import parse_params

    params = parse_params(repo_params(["sasrec", toy], toy={"hidden": 16, "decay": 0.8}))
    assert params.pretrain.backbones == ["sasrec", "toy"]
    assert params.pretrain.model_config_for("toy", 7) == ToyConfig(n_items=7, hidden=16, window=10, decay=0.8)
    with pytest.raises(InputError, match=r"pretrain\.toy\.decay: must be in \(0, 1\], got 1.5"):
        parse_params(repo_params([toy], toy={"decay": 1.5}))
    with pytest.raises(InputError, match=r"pretrain\.toy\.depth: unknown key"):
        parse_params(repo_params([toy], toy={"depth": 2}))
    with pytest.raises(InputError, match=r"pretrain\.toy: missing"):
        parse_params(repo_params([toy]))


def test_unregistered_backbone_is_refused_everywhere():
    from llara.cli import build_parser
    from tasks.params import parse_params

    with pytest.raises(InputError, match="pretrain.backbones"):
        parse_params(repo_params(["sasrec", "toy"], toy={}))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--split", "s", "--backbone", "toy", "--out", "o"])
    with pytest.raises(InputError, match="unknown model family"):
        find_family("toy")


def test_cli_and_stage_arguments_accept_it_and_it_trains(toy, tmp_path, monkeypatch, cli):
    from _recommender_helpers import make_fixture

    from tasks.common import stage_args  # noqa: I001

    items, split = make_fixture(tmp_path / "data", n_users=24)
    code, out, err = cli("pretrain", "--split", split, "--items", items, "--backbone", toy, "--out", tmp_path / "m",
                         "--hidden", 8, "--window", 5, "--epochs", 2, "--batch-size", 16, "--no-progress",
                         "--option", "decay=0.9")
    assert code == 0, err
    assert cli("export", tmp_path / "m", "--out", tmp_path / "e")[0] == 0
    rec = load_recommender(tmp_path / "e")
    assert rec.name == "toy" and rec.dim == 8 and rec.score([[101, 102]], [[103, 104]]).shape == (1, 2)
    monkeypatch.setattr(sys, "argv", ["tasks.pretrain", "paper", toy])
    args = stage_args("tasks.pretrain", "pretrain", split=True, backbone=(FAMILIES, "family"))
    assert (args.protocol, args.backbone) == ("paper", "toy")


@pytest.mark.integration
def test_dvc_matrix_builds_its_stages(toy, tmp_path, repo_root):
    """dvc.yaml's pretrain/export matrix expands over params.yaml's backbones: the toy gets its own stages."""
    shutil.copy(repo_root / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params(["sasrec", toy], toy={"decay": 0.7})))
    dvc(tmp_path, "init", "--no-scm", "-q")
    listed = dvc(tmp_path, "stage", "list", "--name-only", check=False, timeout=120)
    assert listed.returncode == 0, listed.stderr
    stages = set(listed.stdout.split())
    assert {"pretrain@paper-toy", "pretrain@leave-one-out-toy", "export@paper-toy"} <= stages
    assert "pretrain@paper-gru4rec" not in stages
    from dvc.repo import Repo

    with Repo(str(tmp_path)) as repo:  # the stage tracks the toy's own params section
        stage = next(s for s in repo.index.stages if s.name == "pretrain@paper-toy")
        tracked = {p for dep in stage.deps for p in getattr(dep, "params", None) or []}
    assert "pretrain.toy" in tracked and "pretrain.sasrec" not in tracked
