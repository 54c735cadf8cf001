"""Validation-based checkpoint choice (the authors keep the epoch with the best validation HitRatio@1).

Every ``every`` optimizer steps (and at the last one) the model generates answers for a fixed set of validation rows;
the weights of the best step so far (generate HR@1 = correct / all rows; ties go to the later step) are kept in
``<run>/selected/``. When training ends, ``final/`` gets those weights and ``run.json`` says which step they are from.
Each point is appended to ``<run>/validation.jsonl``; both survive a resume (points after the resumed step are
measured again), so a killed run chooses as an uninterrupted one would. A run that starts from step 0 (new, or its
inputs changed) clears them first: points of other inputs are never chosen.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

from llara.atomic import atomic_dir, atomic_path
from llara.errors import InputError
from llara.llm.checkpoint import save_weights
from llara.llm.data import Example
from llara.llm.evaluation import evaluate
from llara.llm.model import LlaraModel
from llara.llm.prompts import PromptEncoder

LOG_FILE = "validation.jsonl"
SELECTED = "selected"


class Selection:
    """The ``on_step`` callback of :func:`llara.llm.training.train` that evaluates and keeps the best weights."""

    def __init__(self, run_dir: Path, examples: Sequence[Example], every: int, total_steps: int, *, item_mode: str,
                 seed: int = 0, batch_size: int = 16):
        self.run_dir = Path(run_dir)
        self.examples = list(examples)
        self.every, self.total = every, total_steps
        self.item_mode, self.seed, self.batch_size = item_mode, seed, batch_size
        self.model: LlaraModel | None = None
        self.encoder: PromptEncoder | None = None
        self.points: list[dict] | None = None

    def bind(self, model: LlaraModel, encoder: PromptEncoder) -> "Selection":
        self.model, self.encoder = model, encoder
        return self

    def _load(self, resumed_step: int) -> list[dict]:
        path = self.run_dir / LOG_FILE
        if not path.is_file():
            return []
        return [p for p in map(json.loads, path.read_text().splitlines()) if p["step"] <= resumed_step]

    def best(self) -> dict | None:
        """The chosen point so far: highest HR@1, the later step on ties."""
        return max(self.points or [], key=lambda p: (p["hr@1"], p["step"]), default=None)

    def __call__(self, row: dict) -> bool:
        step = row["step"]
        if self.points is None:  # first step of this session: earlier points survive, later ones are measured again
            self.points = self._load(step - 1)
            self._write_points()
            if not self.points:  # a run from step 0: weights chosen among other inputs' points must not survive
                shutil.rmtree(self.run_dir / SELECTED, ignore_errors=True)
        if step % self.every and step != self.total:
            return False
        metrics, _ = evaluate(self.model, self.encoder, self.examples, item_mode=self.item_mode, modes=["generate"],
                              seed=self.seed, batch_size=self.batch_size, frame=False)
        gen = metrics["generate"]
        point = {"step": step, "hr@1": gen["hr@1"]["value"], "valid_ratio": gen["valid_ratio"]["value"],
                 "n": gen["hr@1"]["n"]}
        self.points.append(point)
        if self.best() is point:
            with atomic_dir(self.run_dir / SELECTED) as tmp:
                save_weights(self.model, tmp)
                (tmp / "point.json").write_text(json.dumps(self.best(), sort_keys=True) + "\n")
        self._write_points()
        return False

    def _write_points(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.run_dir / LOG_FILE) as tmp:
            tmp.write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in self.points))

    def finish(self) -> dict | None:
        """Put the chosen weights into ``final/`` and record the choice in its ``run.json``. A run resumed at its
        last step (killed after its last checkpoint) trains no step, so its points are read here."""
        if self.points is None:
            self.points = self._load(self.total)
        best = self.best()
        if best is None:
            return None
        selected, final = self.run_dir / SELECTED, self.run_dir / "final"
        kept = json.loads((selected / "point.json").read_text()) if (selected / "point.json").is_file() else None
        if kept != best:
            raise InputError(selected / "point.json", f"holds {kept}, not the chosen point {best}: delete "
                                                        f"{self.run_dir} and train again")
        info = json.loads((final / "run.json").read_text())
        with atomic_dir(final) as tmp:
            for item in selected.iterdir():
                if item.name != "point.json":
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
            info["selected"] = {**best, "every": self.every, "rows": len(self.examples)}
            (tmp / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return best
