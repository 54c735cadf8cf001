"""The long experiments' scripts run end to end: `bench/bench_learning.py` (learning curves, resumable) and
`bench/bench_protocol.py` (the headline on another protocol), each in a small real workspace (a synthetic dataset,
the pipeline's own `dvc repro` of split, SASRec and its export, a tiny random Llama with the real tokenizer). They
check what the scripts promise (CSV rows, a resumed run that continues, the metrics file with paired differences),
not their numbers, which a tiny model cannot make meaningful.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _flow_helpers import child_env, dvc, make_workspace
from _llm_helpers import make_tiny_llm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer_dir) -> Path:  # noqa: F811
    root = make_workspace(tmp_path_factory.mktemp("experiments") / "ws", users=40, n_items=40)
    make_tiny_llm(tokenizer_dir, root / "data/llm/base")  # where stage `llm` would put it
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["split"].update(protocols=["paper", "leave-one-out"])
    params["pretrain"].update(backbones=["sasrec"], epochs=2)
    params["llm"].update(model="data/llm/base", dtype="float32", device="cpu")
    params["finetune"]["profiles"]["default"].update(steps=2, batch_size=2, micro_batch=2, warmup_steps=1,
                                                     checkpoint_every=10, compile=False, autocast=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = dvc(root, "repro", "--single-item", "ingest", "split@leave-one-out", "pretrain@leave-one-out-sasrec",
               "export@leave-one-out-sasrec", "split@paper", "pretrain@paper-sasrec", "export@paper-sasrec",
               check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


def bench(root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=root, env=child_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_learning_curve_rows_and_resume(workspace: Path):
    out = workspace / "data/learning/smoke"
    args = ["--steps", "4", "--eval-every", "2", "--checkpoint-every", "1", "--users", "6", "--threads", "1",
            "--protocol", "leave-one-out", "--out", str(out)]
    first = bench(workspace, "bench_learning.py", *args)
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert [int(r["examples"]) for r in rows] == [0, 4, 8]  # batch_size 2
    assert all(int(r["n"]) == 6 and 0 <= float(r["generate_hr1"]) <= 1 and 0 <= float(r["valid_ratio"]) <= 1
               for r in rows)
    assert float(rows[-1]["cpu_min"]) > 0 and first.stdout.strip().splitlines()[-1].startswith("ours_best_generate_hr1=")

    # killed after step 3's checkpoint, between two points: the same command resumes there, continues the time
    # totals kept for step 3, drops the CSV's later row and recomputes it as the uninterrupted run had it
    checkpoints = sorted((out / "run/checkpoints").iterdir())
    assert len(checkpoints) == 2  # steps 3 and 4 kept (checkpoint every step)
    shutil.rmtree(checkpoints[-1])
    clock = json.loads((out / "clock.json").read_text())
    assert sorted(map(int, clock)) == [1, 2, 3, 4] and clock["3"][0] >= float(rows[1]["cpu_min"]) * 60
    clock["3"] = [600.0, 900.0]  # as if steps 1-3 had taken 10 CPU-minutes
    (out / "clock.json").write_text(json.dumps(clock))
    again = bench(workspace, "bench_learning.py", *args)
    assert "(step 3/4)" in again.stdout
    resumed = list(csv.DictReader((out / "curve.csv").open()))
    same = [c for c in rows[0] if c not in ("cpu_min", "wall_min")]
    assert [{c: r[c] for c in same} for r in resumed] == [{c: r[c] for c in same} for r in rows]
    assert resumed[1]["cpu_min"] == rows[1]["cpu_min"] and 10 < float(resumed[2]["cpu_min"]) < 10 + 5
    # killed during the last point's evaluation (its checkpoint is saved first): the next start measures that point
    # from the checkpoint's weights, as the uninterrupted run did, instead of finishing without it (the tiny model's
    # metrics do not move in 4 steps: test_catch_up_evaluates_the_checkpoint_weights checks which weights are used)
    with (out / "curve.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(resumed[0]))
        writer.writeheader()
        writer.writerows(resumed[:2])
    caught = bench(workspace, "bench_learning.py", *args)
    assert "step 4: its point was not measured" in caught.stdout
    measured = list(csv.DictReader((out / "curve.csv").open()))
    assert [{c: r[c] for c in same} for r in measured] == [{c: r[c] for c in same} for r in rows]
    assert 10 < float(measured[2]["cpu_min"]) < 10 + 5  # the time totals kept at step 4's checkpoint
    resumed = measured
    line = bench(workspace, "bench_learning.py", "--status", "--out", str(out)).stdout
    assert "checkpoint step 4 of 4 (100%)" in line and f"last point step 4: generate {float(rows[2]['generate_hr1']):.3f}" in line

    # keyed on content: every input the run reads is named in settings.json; with one changed (here a setting) the
    # checkpoints are discarded and the old curve is set aside whole, not mixed with the new points
    settings = json.loads((out / "settings.json").read_text())
    assert set(settings["inputs"]) == {"train rows", "recommender", "base LLM", "LLM settings", "items", "prompts",
                                        "training code", "evaluation rows"}
    changed = bench(workspace, "bench_learning.py", *args, "-S", "lr=0.002")
    assert "moved to curve." in changed.stdout and "discarding the checkpoints" in changed.stdout
    aside = out / f"curve.{settings['key'][:16]}.csv"
    assert list(csv.DictReader(aside.open())) == resumed
    fresh = list(csv.DictReader((out / "curve.csv").open()))
    assert [int(r["step"]) for r in fresh] == [0, 2, 4] and float(fresh[-1]["cpu_min"]) < 5
    assert json.loads((out / "settings.json").read_text())["key"] != settings["key"]


def test_learning_curves_script_help_starts_nothing(tmp_path):
    """``bench/learning_curves.sh --help`` prints its usage (each subcommand) and exits, instead of taking ``--help``
    for a recipe and starting a run."""
    script = Path(__file__).resolve().parents[1] / "bench/learning_curves.sh"
    done = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    usage = done.stdout[done.stdout.index("Usage:"):]
    assert all(f"learning_curves.sh {sub}" in usage for sub in ("[recipe", "publish", "status"))
    assert "set -euo" not in done.stdout and not done.stdout.lstrip().startswith("#")


def test_learning_status_reads_the_newest_checkpoint_point_and_pace(tmp_path):
    from bench_learning import COLUMNS, status, write_curve

    out = tmp_path / "run-a"
    assert status(out).endswith("no run yet")
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"train": {"steps": 1000}, "key": "k"}))
    for step in (225, 250):
        (out / f"run/checkpoints/step-{step:06d}").mkdir(parents=True)
        (out / f"run/checkpoints/step-{step:06d}/state.json").write_text(json.dumps({"fingerprint": "k", "step": step}))
    row = dict.fromkeys(COLUMNS, 0) | {"step": 250, "generate_hr1": 0.25, "rank_llm_hr1": 0.245}
    write_curve(out / "curve.csv", [dict.fromkeys(COLUMNS, 0), row])
    (out / "clock.json").write_text(json.dumps({"225": [400.0, 500.0], "250": [700.0, 1000.0]}))  # 20 s per step
    line = status(out)
    assert "checkpoint step 250 of 1000 (25%)" in line and "last point step 250: generate 0.250, rank_llm 0.245" in line
    assert "20.0 s/step, ~4.2 h of training left" in line  # 750 steps x 20 s
    (out / "settings.json").write_text(json.dumps({"train": {"steps": 1000}, "key": "other inputs"}))
    assert "the next start discards them" in status(out)


def test_protocol_headline_waits_for_the_cpu_then_writes_paired_metrics(workspace: Path, tmp_path, monkeypatch):
    """While another CPU fine-tuning holds the pipeline's slot the script waits (two would each run several times
    slower), then trains and evaluates."""
    import tempfile
    import threading

    from tasks.common import cpu_slot, cpu_slot_path

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the child's TMPDIR below: a lock of this test alone
    lines: list[str] = []
    waiting = threading.Event()

    def read(stream) -> None:
        for line in stream:
            lines.append(line)
            if "waiting for another cpu-finetune" in line:
                waiting.set()

    with cpu_slot("cpu-finetune", "cpu", print, path=cpu_slot_path("cpu-finetune")):
        proc = subprocess.Popen([sys.executable, "bench/bench_protocol.py", "--protocol", "leave-one-out",
                                 "--max-rows", "5", "--modes", "generate", "rank_llm"], cwd=workspace,
                                env=child_env(TMPDIR=str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
        reader.start()
        assert waiting.wait(300), "".join(lines)[-3000:]
        assert proc.poll() is None and not (workspace / "data/runs/leave-one-out").exists()  # nothing trained yet
    stdout = proc.stdout.read()
    assert proc.wait(900) == 0, stdout[-2000:] + "".join(lines)[-3000:]
    reader.join(10)
    metrics = json.loads((workspace / "metrics/llara_leave-one-out.json").read_text())
    result = metrics["leave-one-out"]["hybrid-curriculum"]
    for mode in ("generate", "rank_llm"):
        assert result[mode]["hr@1"]["n"] == 5
        paired = result["paired_vs_recommender"][mode]["hr@1"]
        assert paired["value"] == pytest.approx(paired["model"] - paired["baseline"])
    assert stdout.strip().splitlines()[-1].startswith("generate_hr1=")
    assert (workspace / "data/runs/leave-one-out/hybrid-curriculum").is_dir()


def test_answer_score_reductions_agree_with_evaluation_and_update_a_metrics_file(workspace: Path):
    """The `sum` reduction is the evaluation's rank_llm (two code paths, one number); --update-metrics rewrites a
    metrics file's rank_llm entry and its paired difference; a second call re-reads the cached log-probabilities; a
    metrics file of other rows or another recommender is refused, untouched."""
    metrics_file = workspace / "metrics/llara_leave-one-out.json"
    if not metrics_file.is_file():  # normally written by the protocol test above
        bench(workspace, "bench_protocol.py", "--protocol", "leave-one-out", "--max-rows", "5", "--modes", "rank_llm")
    evaluated = json.loads(metrics_file.read_text())["leave-one-out"]["hybrid-curriculum"]
    n = evaluated["recommender"]["hr@1"]["n"]
    first = bench(workspace, "bench_answer_score.py", "--split", "test", "--users", str(n))
    rows = {r["reduction"]: r for r in csv.DictReader((workspace / "metrics/answer_score/leave-one-out-test.csv").open())}
    assert set(rows) == {"sum", "mean", "first"} and all(int(r["n"]) == n for r in rows.values())
    assert float(rows["sum"]["hr1"]) == pytest.approx(evaluated["rank_llm"]["hr@1"]["value"])
    assert float(rows["mean"]["delta_vs_mean"]) == 0
    assert first.stdout.strip().splitlines()[-1] == f"rank_llm_hr1={float(rows['sum']['hr1']):.4f}"

    stale = json.loads(metrics_file.read_text())
    stale["leave-one-out"]["hybrid-curriculum"]["rank_llm"]["hr@1"]["value"] = 0.123  # as if scored the old way
    stale["leave-one-out"]["hybrid-curriculum"]["paired_vs_recommender"]["rank_llm"]["hr@1"]["value"] = -0.5
    metrics_file.write_text(json.dumps(stale))
    again = bench(workspace, "bench_answer_score.py", "--split", "test", "--users", str(n),
                  "--update-metrics", "metrics/llara_leave-one-out.json")
    assert "reusing the answer log-probabilities" in again.stdout
    updated = json.loads(metrics_file.read_text())["leave-one-out"]["hybrid-curriculum"]
    assert updated["rank_llm"] == evaluated["rank_llm"]
    assert updated["paired_vs_recommender"]["rank_llm"] == evaluated["paired_vs_recommender"]["rank_llm"]
    assert {k: v for k, v in updated.items() if k not in ("rank_llm", "paired_vs_recommender")} == {
        k: v for k, v in evaluated.items() if k not in ("rank_llm", "paired_vs_recommender")}  # the rest untouched

    def update(users: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "bench/bench_answer_score.py", "--split", "test", "--users", str(users),
                               "--update-metrics", "metrics/llara_leave-one-out.json"], cwd=workspace,
                              env=child_env(), capture_output=True, text=True, timeout=900)

    wrong = update(n - 1)
    assert wrong.returncode != 0 and f"evaluated on {n} rows" in wrong.stderr
    other = json.loads(metrics_file.read_text())
    other["leave-one-out"]["hybrid-curriculum"]["recommender"]["hr@1"]["value"] += 1 / n  # another recommender
    metrics_file.write_text(json.dumps(other))
    wrong = update(n)
    assert wrong.returncode != 0 and "its recommender HR@1" in wrong.stderr
    assert json.loads(metrics_file.read_text()) == other  # nothing written


def test_answer_score_cache_is_named_by_every_input_it_loads(tmp_path):
    from bench_answer_score import cache_path

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    files = {name: tmp_path / name for name in ("recommender", "items.parquet", "llm", "split.parquet")}
    for name, path in files.items():
        (path / "weights" if name in ("recommender", "llm") else path).parent.mkdir(parents=True, exist_ok=True)
        (path / "weights" if name in ("recommender", "llm") else path).write_text(name)
    (run / "final" / "run.json").write_text(json.dumps({"recommender": str(files["recommender"]),
                                                        "items": str(files["items.parquet"]),
                                                        "llm": {"model": str(files["llm"])}}))

    def key() -> str:
        return cache_path("p", "test", "v", run, files["split.parquet"], 5, 0, 16).name

    first = key()
    assert key() == first and first.startswith("p-test-v-")
    assert cache_path("p", "test", "v", run, files["split.parquet"], 6, 0, 16).name != first
    names = [first]
    for path in (files["recommender"] / "weights", files["items.parquet"], files["llm"] / "weights"):
        path.write_text(path.read_text() + " changed")  # another size: the per-process digest memo sees it
        names.append(key())
    assert len(set(names)) == 4, "a changed recommender, item table or base LLM must not reuse the cache"


def test_nightly_benchmark_resumes_only_with_the_same_settings_and_code(tmp_path, monkeypatch):
    import argparse

    import bench_nightly

    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(bench_nightly, "ROOT", tmp_path)
    monkeypatch.setattr(bench_nightly, "workspace_files", lambda: ["a.py"])
    args = argparse.Namespace(quick=True, work="/tmp/a", delta=0.01, eval_users=None, rerank=None, finetune_steps=None)
    key = bench_nightly.run_key(args)
    assert bench_nightly.run_key(argparse.Namespace(**{**vars(args), "work": "/tmp/b"})) == key  # where: not content
    assert bench_nightly.run_key(argparse.Namespace(**{**vars(args), "delta": 0.02})) != key
    (tmp_path / "a.py").write_text("x = 22\n")
    assert bench_nightly.run_key(args) != key


def test_catch_up_evaluates_the_checkpoint_weights(tmp_path, monkeypatch):
    """A run stopped while its newest checkpoint's point was being evaluated: the next start loads that checkpoint's
    weights and measures the point (with training's attention kernel, at the time totals kept for that step), once;
    a checkpoint between points, or of other inputs, measures nothing."""
    import torch

    import llara.llm.checkpoint as checkpoint
    from bench_learning import COLUMNS, CurveRecorder, catch_up, read_curve, write_curve

    class Model:
        device, attention = torch.device("cpu"), "sdpa"

        def set_attention(self, implementation):
            self.attention = implementation

    model, loaded, seen = Model(), [], []
    monkeypatch.setattr(checkpoint, "load_weights", lambda m, directory: loaded.append(directory.name))

    def evaluate_point():
        seen.append(model.attention)
        v = 0.75 if loaded else 0.0
        hr = {"value": v, "ci95": [v, v], "n": 4}
        return {"generate": {"hr@1": hr, "valid_ratio": {"value": 1.0}}, "rank_llm": {"hr@1": hr},
                "rank": {"hr@1": hr}, "recommender": {"hr@1": {"value": 0.5}},
                "paired_vs_recommender": {m: {"hr@1": hr} for m in ("generate", "rank_llm")}}

    out = tmp_path / "run"
    root = out / "run/checkpoints"

    def save(step, key="k"):
        (root / f"step-{step:06d}").mkdir(parents=True)
        (root / f"step-{step:06d}/state.json").write_text(json.dumps({"fingerprint": key, "step": step}))

    out.mkdir()
    write_curve(out / "curve.csv", [dict.fromkeys(COLUMNS, 0) | {"n": 4}])
    (out / "clock.json").write_text(json.dumps({"250": [600.0, 900.0]}))
    cfg = type("Cfg", (), {"attention": "auto", "batch_size": 8})()
    recorder = CurveRecorder(out / "curve.csv", evaluate_point, clock=out / "clock.json")
    is_point = lambda step: step % 250 == 0  # noqa: E731
    save(250)
    catch_up(recorder, model, root, "k", is_point, cfg)
    rows = read_curve(out / "curve.csv", 10 ** 6)
    assert loaded == ["step-000250"] and seen == ["eager"] and model.attention == "sdpa"
    assert [(int(r["step"]), int(r["examples"]), float(r["generate_hr1"]), float(r["cpu_min"])) for r in rows] == [
        (0, 0, 0.0, 0.0), (250, 2000, 0.75, 10.0)]
    catch_up(recorder, model, root, "k", is_point, cfg)  # measured already
    save(275)
    catch_up(recorder, model, root, "k", is_point, cfg)  # between two points
    shutil.rmtree(root)
    save(500, key="other")
    catch_up(recorder, model, root, "k", is_point, cfg)  # other inputs: training starts over
    assert loaded == ["step-000250"] and len(read_curve(out / "curve.csv", 10 ** 6)) == 2


def test_a_curve_set_aside_twice_under_one_key_keeps_both(tmp_path):
    """Switching a run directory between inputs A, B, A, B sets A's curve aside twice: the second does not overwrite
    the first."""
    from bench_learning import key_curve

    curve = tmp_path / "curve.csv"
    for i, key in enumerate(["a" * 16, "b" * 16, "a" * 16, "b" * 16]):
        key_curve(tmp_path, {}, key, log=lambda message: None)
        curve.write_text(f"curve {i}\n")
    aside = {p.name: p.read_text() for p in tmp_path.glob("curve.*.csv")}
    assert aside == {f"curve.{'a' * 16}.csv": "curve 0\n", f"curve.{'b' * 16}.csv": "curve 1\n",
                     f"curve.{'a' * 16}.1.csv": "curve 2\n"}


def test_publish_checks_every_curve_before_it_copies_any(tmp_path):
    """``learning_curves.sh publish`` replaces no committed curve when one of the runs lacks a committed step (a
    restarted run that has not caught up): the other curves are not copied either, so tables and CSVs stay in step."""
    repo = Path(__file__).resolve().parents[1]
    for name in ("bench/learning_curves.sh", "scripts/env.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, tmp_path / name)
    header = "step,examples\n"
    curves = {"data/learning/ours-loo/curve.csv": "0,0\n250,2000\n", "data/learning/paper-loo/curve.csv": "0,0\n",
              "metrics/learning/ours-loo-val200.csv": "0,0\n", "metrics/learning/paper-loo-val200.csv": "0,0\n250,2000\n"}
    for name, rows in curves.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(header + rows)
    done = subprocess.run(["bash", str(tmp_path / "bench/learning_curves.sh"), "publish"], capture_output=True,
                          text=True, timeout=120, env=child_env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "data/learning/paper-loo/curve.csv lacks step(s) [250]" in done.stderr
    assert (tmp_path / "metrics/learning/ours-loo-val200.csv").read_text() == header + "0,0\n"  # not copied


def test_publish_keeps_the_curve_of_another_run(tmp_path):
    """A restarted run that has caught up replaces the committed curve only after keeping it as ``-runN.csv`` (the
    next free N): its points differ at the same steps. The same run, further on, just replaces it."""
    repo = Path(__file__).resolve().parents[1]
    for name in ("bench/learning_curves.sh", "scripts/env.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, tmp_path / name)
    header = "step,generate_hr1\n"
    curves = {"data/learning/ours-loo/curve.csv": "0,0.01\n250,0.30\n500,0.41\n",
              "data/learning/paper-loo/curve.csv": "0,0.01\n250,0.12\n",
              "metrics/learning/ours-loo-val200.csv": "0,0.01\n250,0.32\n",   # another run: 0.32 at step 250
              "metrics/learning/ours-loo-val200-run1.csv": "0,0.01\n",
              "metrics/learning/paper-loo-val200.csv": "0,0.01\n"}             # the same run, one point fewer
    for name, rows in curves.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(header + rows)
    (tmp_path / "bench/learning_table.py").write_text("import sys\n")  # the table renderer is tested on its own
    done = subprocess.run(["bash", str(tmp_path / "bench/learning_curves.sh"), "publish"], capture_output=True,
                          text=True, timeout=120, env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    learning = tmp_path / "metrics/learning"
    assert (learning / "ours-loo-val200-run2.csv").read_text() == header + curves["metrics/learning/ours-loo-val200.csv"]
    assert (learning / "ours-loo-val200-run1.csv").read_text() == header + "0,0.01\n"   # not overwritten
    assert (learning / "ours-loo-val200.csv").read_text() == header + curves["data/learning/ours-loo/curve.csv"]
    assert (learning / "paper-loo-val200.csv").read_text() == header + curves["data/learning/paper-loo/curve.csv"]
    assert not list(learning.glob("paper-loo-val200-run*.csv"))
    assert "kept as metrics/learning/ours-loo-val200-run2.csv" in done.stdout


@pytest.mark.parametrize("recipes, threads", [([], "1"), (["paper"], "2")])
def test_learning_curves_give_a_recipe_run_alone_both_threads(tmp_path, recipes, threads):
    """Both recipes side by side get one torch thread each; one recipe named alone (the one left when the other has
    finished) gets two. The script runs as written, with `dvc` and bench_learning.py replaced by recorders."""
    repo = Path(__file__).resolve().parents[1]
    for name in ("bench/learning_curves.sh", "scripts/env.sh", "params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, tmp_path / name)
    bin_dir = tmp_path / ".venv/bin"  # the script puts the workspace's .venv/bin first on PATH
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "dvc").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "dvc").chmod(0o755)
    (tmp_path / "bench/bench_learning.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "Path(out + '.args').write_text(' '.join(sys.argv[1:]))\n")
    done = subprocess.run(["bash", str(tmp_path / "bench/learning_curves.sh"), *recipes], capture_output=True,
                          text=True, timeout=120, env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    ran = {p.name: p.read_text().split() for p in (tmp_path / "data/learning").glob("*.args")}
    assert sorted(ran) == sorted(f"{r}-loo.args" for r in recipes or ["ours", "paper"])
    for args in ran.values():
        assert args[args.index("--threads") + 1] == threads


def test_ab_arms_train_apart_and_are_compared_paired_with_the_first(workspace: Path):
    """bench_ab: each arm trains with its own settings into its own run; every arm and mode is paired with the first
    arm and with the recommender on the same users; a rerun trains nothing and reads the predictions back; an arm with
    an unknown setting stops the script before anything trains."""
    import polars as pl

    from llara.champion import run_digest

    table = workspace / "bench/results/ab_test.csv"
    args = ["--protocol", "leave-one-out", "--arm", "base", "--arm", "heavy:head_weight=4,seed=3",
            "--modes", "generate", "rank_llm", "--csv", str(table)]
    first = bench(workspace, "bench_ab.py", *args)
    root = workspace / "data/bench/ab/leave-one-out"
    trained = {arm: json.loads((root / arm / "run/final/run.json").read_text())["train"] for arm in ("base", "heavy")}
    assert (trained["base"]["head_weight"], trained["base"]["seed"]) == (1.0, 0)
    assert (trained["heavy"]["head_weight"], trained["heavy"]["seed"]) == (4.0, 3)
    rows = list(csv.DictReader(table.open()))
    assert [(r["arm"], r["mode"]) for r in rows] == [("base", "generate"), ("base", "rank_llm"),
                                                     ("heavy", "generate"), ("heavy", "rank_llm")]
    n = pl.read_parquet(workspace / "data/split/leave-one-out/test.parquet").height
    assert all(int(r["n"]) == n for r in rows)
    got = {(r["arm"], r["mode"]): {k: float(v) for k, v in r.items() if k.startswith(("hr1", "minus", "ci"))}
           for r in rows}
    for mode in ("generate", "rank_llm"):
        base, heavy = got["base", mode], got["heavy", mode]
        assert base["minus_base"] == base["minus_base_low"] == base["minus_base_high"] == 0
        assert heavy["minus_base"] == pytest.approx(heavy["hr1"] - base["hr1"], abs=1e-6)
        assert heavy["minus_base_low"] <= heavy["minus_base"] <= heavy["minus_base_high"]
        for arm in ("base", "heavy"):
            predictions = pl.read_parquet(root / arm / "predictions.parquet")
            recommender = float((predictions["recommender_rank"] == 1).mean())
            assert got[arm, mode]["minus_recommender"] == pytest.approx(got[arm, mode]["hr1"] - recommender, abs=1e-6)
    templates = {arm: pl.read_parquet(root / arm / "predictions.parquet").sort("row")["template"].to_list()
                 for arm in ("base", "heavy")}
    assert templates["heavy"] == templates["base"]  # another training seed, the same prompts
    assert first.stdout.strip().splitlines()[-1] == f"generate_best_minus_base={got['heavy', 'generate']['minus_base']:.4f}"

    digests = {arm: run_digest(root / arm / "run/final") for arm in ("base", "heavy")}
    before = table.read_bytes()
    again = bench(workspace, "bench_ab.py", *args)
    assert (again.stdout + again.stderr).count("predictions unchanged, read back") == 2
    assert {arm: run_digest(root / arm / "run/final") for arm in ("base", "heavy")} == digests
    assert table.read_bytes() == before

    compared = workspace / "bench/results/ab_compared.csv"  # the same evaluations, compared as files
    bench(workspace, "bench_ab.py", "--modes", "generate", "rank_llm", "--csv", str(compared), "--compare",
          f"base={root / 'base/predictions.parquet'}", f"heavy={root / 'heavy/predictions.parquet'}")
    drop_settings = lambda path: [{k: v for k, v in r.items() if k != "settings"}  # noqa: E731
                                  for r in csv.DictReader(path.open())]
    assert drop_settings(compared) == drop_settings(table)

    # groups: a setting over several seeds. a=base, b=heavy, c=d=heavy: g2's per-user mean minus g1's is half of heavy
    # minus base, and a group's seed spread is its arms' largest HR@1 difference
    files = {name: root / arm / "predictions.parquet" for name, arm in zip("abcd", ("base", "heavy", "heavy", "heavy"))}
    grouped = workspace / "bench/results/ab_grouped.csv"
    bench(workspace, "bench_ab.py", "--modes", "generate", "rank_llm", "--csv", str(grouped), "--compare",
          *[f"{k}={v}" for k, v in files.items()], "--group", "g1=a,b", "--group", "g2=c,d")
    groups = {(r["arm"], r["mode"]): r for r in csv.DictReader(grouped.open()) if r["arm"].startswith("group:")}
    for mode in ("generate", "rank_llm"):
        base, heavy = got["base", mode], got["heavy", mode]
        g1, g2 = groups["group:g1", mode], groups["group:g2", mode]
        assert float(g1["hr1"]) == pytest.approx((base["hr1"] + heavy["hr1"]) / 2, abs=1e-6)
        assert float(g2["minus_base"]) == pytest.approx((heavy["hr1"] - base["hr1"]) / 2, abs=1e-6)
        assert float(g1["minus_base"]) == 0 and float(g2["seed_spread"]) == 0
        assert float(g1["seed_spread"]) == pytest.approx(abs(heavy["hr1"] - base["hr1"]), abs=1e-6)
    unknown = subprocess.run([sys.executable, "bench/bench_ab.py", "--compare", f"a={files['a']}", "--group", "g=a,z"],
                             cwd=workspace, env=child_env(), capture_output=True, text=True, timeout=300)
    assert unknown.returncode != 0 and "unknown arm(s) ['z']" in unknown.stderr and "Traceback" not in unknown.stderr

    bad = subprocess.run([sys.executable, "bench/bench_ab.py", "--arm", "base", "--arm", "odd:no_such_setting=1"],
                         cwd=workspace, env=child_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no_such_setting" in bad.stderr and "Traceback" not in bad.stderr
    assert not (root / "odd").exists()


def test_ab_valid_ratio_is_read_for_every_generate_mode(workspace: Path, tmp_path):
    """bench_ab --compare: ValidRatio is reported for each generate mode (one order and two orders, each from its own
    column), left empty for ranking modes, and a group's is its arms' mean."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    files = {}
    for name in ("a", "b"):
        n = 40
        files[name] = tmp_path / f"{name}.parquet"
        pl.DataFrame({"row": np.arange(n), "correct": rng.random(n) < 0.4, "valid": rng.random(n) < 0.9,
                      "correct_two_orders": rng.random(n) < 0.5, "valid_two_orders": rng.random(n) < 0.7,
                      "rank_llm": rng.integers(1, 21, n), "recommender_rank": rng.integers(1, 21, n)}
                     ).write_parquet(files[name])
    table = tmp_path / "ab.csv"
    bench(workspace, "bench_ab.py", "--modes", "generate", "generate_two_orders", "rank_llm", "--csv", str(table),
          "--compare", *[f"{k}={v}" for k, v in files.items()], "--group", "g=a,b")
    rows = {(r["arm"], r["mode"]): r["valid_ratio"] for r in csv.DictReader(table.open())}
    frames = {k: pl.read_parquet(v) for k, v in files.items()}
    for mode, column in (("generate", "valid"), ("generate_two_orders", "valid_two_orders")):
        means = [float(frames[k][column].mean()) for k in ("a", "b")]
        assert [float(rows[k, mode]) for k in ("a", "b")] == pytest.approx(means)
        assert float(rows["group:g", mode]) == pytest.approx(sum(means) / 2)
    assert rows["a", "rank_llm"] == rows["group:g", "rank_llm"] == ""
