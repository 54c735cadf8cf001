"""The champion: the model the product serves, its versions, promotion decisions and rollback.

A champion directory (``data/champion``, the persisted output of stage ``promote``) holds:

- ``versions/vNNNN/``: one self-contained bundle per promoted model: ``run/final/`` (the trained run's weights and
  run.json), ``recommender/`` (the recommender export it was trained with), ``items.parquet`` and, when ingest wrote
  them, the id maps (``user_ids.parquet``, ``item_ids.parquet``), and ``bundle.json`` (version, the run's content
  hash, the base LLM as the run names it, a folder or hub id, and its content hash, the comparison that promoted
  it). The base LLM is not copied (hundreds of MB); loading checks its content hash.
- ``history.json``: every decision, oldest first (``promoted``, ``kept``, ``rollback``, ``unchanged``);
- ``CURRENT``: the version serving now.

A challenger is promoted when it is not worse than the champion by more than ``margin`` in the deciding mode's HR@1
(paired difference challenger - champion on the same validation users and candidates, point estimate), counting what
the champion's lineage has already given up: every version records its ``drift``, ``min(0, champion's drift +
difference)``, the estimated HR@1 lost since the best model of its line (a gain pays losses back, never above 0), and
a challenger whose drift would fall below ``-margin`` is refused. So nights each a little worse cannot add up to more
than ``margin``. The first challenger is promoted when there is no champion (drift 0). Every version stays, so the
previous one is always recoverable (:func:`rollback`); a version rolled back from is never promoted again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from llara.atomic import atomic_dir, atomic_path, write_json
from llara.errors import require
from llara.fingerprint import file_digest, json_digest, model_digest, tree_files
from llara.metrics import paired_difference, summarize

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.json"
BUNDLE_FILE = "bundle.json"
ID_MAP_FILES = ("user_ids.parquet", "item_ids.parquet")


def _canonical(value):
    """JSON with sorted keys and sorted lists of names (peft writes ``target_modules``, a set, in hash order)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def run_digest(final_dir: str | Path) -> str:
    """Content hash of a trained run's ``final/``: weight files byte for byte, JSON files canonicalized."""
    final_dir = Path(final_dir)
    digest = hashlib.sha256()
    for f in tree_files(final_dir):
        content = json_digest(_canonical(json.loads(f.read_text()))) if f.suffix == ".json" else file_digest(f)
        digest.update(f"{f.relative_to(final_dir).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def read_history(champion_dir: str | Path) -> list[dict]:
    path = Path(champion_dir) / HISTORY_FILE
    return json.loads(path.read_text()) if path.is_file() else []


SERVING_EVENTS = ("promoted", "rollback")  # history events that change the version served


def current_version(champion_dir: str | Path) -> str | None:
    """The version serving now (``CURRENT``). A decision is written to the history first and to ``CURRENT`` then:
    when a crash came between the two, the history's last promotion or rollback is completed here."""
    path = Path(champion_dir) / CURRENT_FILE
    current = path.read_text().strip() if path.is_file() else None
    decided = [e["version"] for e in read_history(champion_dir) if e["event"] in SERVING_EVENTS]
    if decided and decided[-1] != current and (version_dir(champion_dir, decided[-1]) / BUNDLE_FILE).is_file():
        with atomic_path(path) as tmp:
            tmp.write_text(decided[-1] + "\n")
        return decided[-1]
    return current


def version_dir(champion_dir: str | Path, version: str) -> Path:
    return Path(champion_dir) / "versions" / version


def bundle_info(champion_dir: str | Path, version: str | None = None) -> dict:
    version = version or current_version(champion_dir)
    require(version is not None, champion_dir, "no champion yet (run the nightly flow or `dvc repro promote`)")
    path = version_dir(champion_dir, version) / BUNDLE_FILE
    require(path.is_file(), path, "missing (incomplete champion version)")
    return json.loads(path.read_text())


def make_bundle(run_dir: Path, dest: Path, *, version: str, run_hash: str, comparison: dict | None,
                drift: float = 0.0) -> None:
    """Write the self-contained bundle of trained run ``run_dir`` into ``dest`` (atomically): its weights and what it
    was trained with as its run.json names them (recommender export, item table and the id maps beside it, copied;
    the base LLM, a folder or a hub id, referenced with its content digest). The challenger was loaded from the same
    paths with its contents checked (:func:`llara.llm.runs.check_trained_inputs`), so the copies are what it learned
    from, whatever ``params.yaml`` says now (a profile may train on another LLM than ``llm.base_dir``)."""
    run_info = json.loads((run_dir / "final" / "run.json").read_text())
    items, llm = Path(run_info["items"]), str(run_info["llm"]["model"])
    with atomic_dir(dest) as tmp:
        shutil.copytree(run_dir / "final", tmp / "run" / "final")
        shutil.copytree(run_info["recommender"], tmp / "recommender")
        shutil.copy2(items, tmp / "items.parquet")
        for name in ID_MAP_FILES:
            if (items.parent / name).is_file():
                shutil.copy2(items.parent / name, tmp / name)
        write_json({"version": version, "run_hash": run_hash, "variant": run_info.get("variant"),
                    "source_run": str(run_dir), "llm_dir": llm, "llm_hash": model_digest(llm),
                    "comparison": comparison, "drift": drift}, tmp / BUNDLE_FILE)


def load_bundle(champion_dir: str | Path, version: str | None = None, *, device: str = "auto"):
    """(model, encoder, info, bundle) of the champion (or ``version``), ready to score; its base LLM, recommender and
    items must have the content its run was trained on (:func:`llara.llm.runs.check_trained_inputs`)."""
    from llara.llm.runs import load_run

    bundle = bundle_info(champion_dir, version)
    directory = version_dir(champion_dir, bundle["version"])
    llm = bundle["llm_dir"]  # a folder, or a hub id (then its cached snapshot is the one recorded)
    require(Path(llm).exists() or model_digest(llm) == bundle["llm_hash"], llm,
            "the champion's base LLM is missing (`dvc pull`, `dvc repro llm`, or download that hub model)")
    model, encoder, info = load_run(directory / "run", recommender=directory / "recommender",
                                    items=directory / "items.parquet", llm_model=llm, device=device)
    info = {**info, "items": str(directory / "items.parquet")}  # its id maps lie beside it, in the bundle
    return model, encoder, info, bundle


def item_originals(directory: Path, items: Sequence[int]) -> np.ndarray:
    """Original ids of internal item ids, through ``directory/item_ids.parquet`` (identity without a map)."""
    path = directory / "item_ids.parquet"
    items = np.asarray(items, dtype=np.int64)
    if not path.is_file():
        return items.astype(object)
    table = pl.read_parquet(path)
    lookup = dict(zip(table["id"].to_list(), table["original"].to_list()))
    return np.array([lookup.get(int(i)) for i in items], dtype=object)


def translate_examples(examples: Sequence, from_dir: Path, to_dir: Path):
    """The examples in ``to_dir``'s internal item ids (via original ids); an example whose target or candidates the
    other side does not know is dropped, unknown history items are skipped. Returns (kept indices, examples)."""
    from llara.llm.data import Example

    if not (from_dir / "item_ids.parquet").is_file() and not (to_dir / "item_ids.parquet").is_file():
        return list(range(len(examples))), list(examples)
    target_table = pl.read_parquet(to_dir / "item_ids.parquet") if (to_dir / "item_ids.parquet").is_file() else None
    to_internal = (dict(zip(target_table["original"].to_list(), target_table["id"].to_list()))
                   if target_table is not None else None)
    all_items = sorted({i for e in examples for i in (*e.history, *e.candidates)})
    originals = dict(zip(all_items, item_originals(from_dir, all_items)))
    mapped = {i: (to_internal.get(o) if to_internal is not None else o) for i, o in originals.items()}
    kept, out = [], []
    for k, e in enumerate(examples):
        cands = [mapped[c] for c in e.candidates]
        history = tuple(mapped[h] for h in e.history if mapped[h] is not None)
        if any(c is None for c in cands) or not history:
            continue
        kept.append(k)
        out.append(Example(e.row, e.user, history, mapped[e.target], tuple(cands)))
    return kept, out


@dataclass
class Decision:
    promote: bool
    reason: str
    comparison: dict
    drift: float = 0.0  # the challenger's lineage drift (see the module docstring); the champion's when refused


def hit_column(mode: str) -> str:
    """The predictions' column a mode's hits are read from: ``correct`` (0/1) for generate, ``correct_two_orders``
    for generate_two_orders, the target's 1-based rank under the mode's own name for the rank modes."""
    return mode.replace("generate", "correct") if mode.startswith("generate") else mode


def valid_column(mode: str) -> str | None:
    """The predictions' 0/1 ValidRatio column of a generate mode (``valid``, ``valid_two_orders``); None for ranking."""
    return mode.replace("generate", "valid") if mode.startswith("generate") else None


def per_user_hits(predictions: pl.DataFrame, mode: str) -> np.ndarray:
    """0/1 HR@1 per example from :func:`llara.llm.evaluation.evaluate`'s predictions."""
    column = predictions[hit_column(mode)]
    return (column if mode.startswith("generate") else column == 1).cast(pl.Float64).to_numpy()


def compare(challenger: dict[str, np.ndarray], champion: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Per mode: both models' HR@1 (value, CI, n) and the paired difference challenger - champion with its CI."""
    return {mode: {"challenger": summarize(challenger[mode], seed=seed), "champion": summarize(champion[mode], seed=seed),
                   "difference": paired_difference(challenger[mode], champion[mode], seed=seed)}
            for mode in challenger}


def decide(comparison: dict | None, mode: str, margin: float, drift: float = 0.0) -> Decision:
    """Promote unless the challenger's HR@1 in ``mode``, added to the champion's lineage ``drift`` (<= 0), is lower
    than the champion's line's best by more than ``margin``."""
    if comparison is None:
        return Decision(True, "no champion yet: the first challenger becomes the champion", {})
    diff = comparison[mode]["difference"]
    new_drift = min(0.0, drift + diff["value"])
    measured = (f"{mode} HR@1 {diff['model']:.4f} vs champion {diff['baseline']:.4f}: difference {diff['value']:+.4f} "
                f"[{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] n={diff['n']}")
    if drift:
        measured += (f"; the champion's line had lost {drift:+.4f} since its best, so {new_drift:+.4f} in all, "
                     "which")
    if new_drift >= -margin:
        return Decision(True, f"{measured} is not worse than the margin -{margin}", comparison, new_drift)
    return Decision(False, f"{measured} is worse than the margin -{margin}: the champion stays", comparison, drift)


def next_version(champion_dir: Path) -> str:
    existing = [p.name for p in (champion_dir / "versions").glob("v*")] if (champion_dir / "versions").is_dir() else []
    return f"v{max([int(v[1:]) for v in existing if v[1:].isdigit()] + [0]) + 1:04d}"


def record(champion_dir: Path, entry: dict, current: str | None) -> None:
    """Append ``entry`` to the history, then point CURRENT at ``current`` (each file replaced atomically; after a
    crash between the two, :func:`current_version` completes the recorded decision)."""
    history = read_history(champion_dir) + [entry]
    write_json(history, champion_dir / HISTORY_FILE)
    if current is not None:
        with atomic_path(champion_dir / CURRENT_FILE) as tmp:
            tmp.write_text(current + "\n")


def rejected_hashes(history: list[dict]) -> set[str]:
    """Run hashes of versions rolled back from: never promoted again."""
    return {e["from_hash"] for e in history if e["event"] == "rollback" and e.get("from_hash")}


def rollback(champion_dir: str | Path, to_version: str | None = None) -> dict:
    """Serve the most recently promoted earlier version again (or ``to_version``). A model rolled back from is never
    served again: versions holding it (by content hash), or the current model, are passed over, and refused as
    ``to_version``."""
    champion_dir = Path(champion_dir)
    current = current_version(champion_dir)
    require(current is not None, champion_dir, "no champion to roll back")
    history = read_history(champion_dir)
    current_hash = bundle_info(champion_dir, current)["run_hash"]
    never = rejected_hashes(history) | {current_hash}

    def servable(version: str) -> bool:
        return (version_dir(champion_dir, version) / BUNDLE_FILE).is_file() and \
            bundle_info(champion_dir, version)["run_hash"] not in never
    if to_version is None:
        promoted = dict.fromkeys(reversed([e["version"] for e in history if e["event"] == "promoted"]))
        earlier = [v for v in promoted if v != current and servable(v)]
        require(bool(earlier), champion_dir, f"no earlier version to roll back to from {current} (none other was "
                                             "promoted, or each holds a model rolled back from or the current one)")
        to_version = earlier[0]
    require(version_dir(champion_dir, to_version).is_dir(), champion_dir, f"no version {to_version}")
    require(servable(to_version), champion_dir, f"{to_version} holds the current model or one rolled back from, "
                                                "which is never served again")
    entry = {"event": "rollback", "version": to_version, "from_version": current,
             "from_hash": current_hash,
             "reason": f"rolled back from {current} to {to_version}"}
    record(champion_dir, entry, to_version)
    return entry


def evaluate_hits(model, encoder, info: dict, examples: Sequence, modes: Sequence[str], batch_size: int,
                  seed: int) -> dict[str, np.ndarray]:
    """Per-example HR@1 (0/1) of a loaded model in each mode, through the LLM evaluation API."""
    from llara.llm.evaluation import evaluate
    from llara.llm.runs import eval_item_mode

    _, predictions = evaluate(model, encoder, examples, item_mode=eval_item_mode(info.get("variant", "")),
                              modes=list(modes), seed=seed, batch_size=batch_size,
                              length_norm=info["train"]["length_norm"])
    return {mode: per_user_hits(predictions, mode) for mode in modes}


def challenge(champion_dir: str | Path, run_dir: str | Path, examples: Sequence, *, id_maps_dir: Path | None,
              modes: Sequence[str], mode: str, margin: float, batch_size: int = 16, seed: int = 0, device: str = "auto",
              log=print) -> tuple[Decision, dict]:
    """Evaluate the trained run (challenger) and the champion on the same validation ``examples`` and decide.

    Returns the decision and the history entry recorded for it. A promoted challenger becomes a new version."""
    from llara.llm.runs import load_run

    champion_dir, run_dir = Path(champion_dir), Path(run_dir)
    require(mode in modes, "champion.metric", f"{mode!r} is not among the compared modes {list(modes)}")
    run_hash = run_digest(run_dir / "final")
    history, current = read_history(champion_dir), current_version(champion_dir)
    base = {"challenger_run": str(run_dir), "challenger_hash": run_hash, "margin": margin, "mode": mode}
    if current is not None and bundle_info(champion_dir)["run_hash"] == run_hash:
        entry = {**base, "event": "unchanged", "version": current, "reason": "the challenger is the champion"}
        record(champion_dir, entry, None)
        return Decision(False, entry["reason"], {}), entry
    if run_hash in rejected_hashes(history):
        entry = {**base, "event": "kept", "version": current, "reason": "this model was rolled back before"}
        record(champion_dir, entry, None)
        return Decision(False, entry["reason"], {}), entry
    model, encoder, info = load_run(run_dir, device=device)
    log(f"challenger {run_dir}: evaluating {len(examples)} validation users ({', '.join(modes)})")
    challenger_hits = evaluate_hits(model, encoder, info, examples, modes, batch_size, seed)
    del model
    comparison, drift = None, 0.0
    if current is not None:
        c_model, c_encoder, c_info, bundle = load_bundle(champion_dir, device=device)
        drift = bundle.get("drift", 0.0)  # bundles written before drift was recorded: 0
        kept, translated = translate_examples(examples, id_maps_dir or Path("/nonexistent"),
                                              version_dir(champion_dir, current))
        require(len(kept) > 0, champion_dir, "the champion knows none of the validation users' candidates")
        log(f"champion {current}: evaluating the same {len(kept)} validation users")
        champion_hits = evaluate_hits(c_model, c_encoder, c_info, translated, modes, batch_size, seed)
        del c_model
        comparison = compare({m: h[kept] for m, h in challenger_hits.items()}, champion_hits, seed=seed)
    decision = decide(comparison, mode, margin, drift)
    if not decision.promote:
        entry = {**base, "event": "kept", "version": current, "reason": decision.reason, "comparison": comparison}
        record(champion_dir, entry, None)
        return decision, entry
    version = next_version(champion_dir)
    make_bundle(run_dir, version_dir(champion_dir, version), version=version, run_hash=run_hash, comparison=comparison,
                drift=decision.drift)
    if comparison is None:
        comparison = {m: {"challenger": summarize(h, seed=seed)} for m, h in challenger_hits.items()}
    entry = {**base, "event": "promoted", "version": version, "previous": current, "reason": decision.reason,
             "drift": decision.drift, "comparison": comparison}
    record(champion_dir, entry, version)
    return decision, entry


def _fmt(m: dict | None) -> str:
    if not m:
        return "–"
    ci = m.get("ci95") or [float("nan"), float("nan")]
    return f"{m['value']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] n={m['n']}"


def summary(champion_dir: str | Path, entry: dict) -> dict:
    """``metrics/champion.json``: the last comparison (rows the report and ``dvc metrics`` read), decision, history."""
    decision = {k: v for k, v in entry.items() if k != "comparison"}
    return {"comparison": entry.get("comparison") or {}, "decision": decision,
            "current": current_version(champion_dir), "history": read_history(champion_dir)}


def markdown(data: dict) -> str:
    """The comparison, the decision and the champion's history as markdown (the nightly flow's artifact)."""
    decision = data.get("decision", {})
    lines = [f"## Champion: {data.get('current') or 'none'}", "",
             f"**Decision: {decision.get('event', '?')}** – {decision.get('reason', '')}", ""]
    comparison = data.get("comparison") or {}
    if comparison:
        lines += ["| mode | challenger HR@1 | champion HR@1 | difference (paired) |", "|---|---|---|---|"]
        for mode, c in comparison.items():
            lines.append(f"| {mode} | {_fmt(c.get('challenger'))} | {_fmt(c.get('champion'))} | "
                         f"{_fmt(c.get('difference'))} |")
        lines.append("")
    lines += ["### History", "", "| # | event | version | reason |", "|---|---|---|---|"]
    for i, e in enumerate(data.get("history", []), 1):
        lines.append(f"| {i} | {e['event']} | {e.get('version') or '–'} | {e.get('reason', '')} |")
    return "\n".join(lines) + "\n"
