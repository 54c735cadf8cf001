"""Champion/challenger with the real flow, a real DVC repo and the real registry (data/champion), then the remote
round trip: push after promotion, fresh clone, `dvc pull`, nothing to reproduce, `llara recommend` from the champion.

Synthetic data with a learnable sequence (each user walks through consecutive items), a tiny random Llama with the
real SmolLM2 tokenizer. The `ours` recipe trained for 12 steps (its score head over the affinity features; no
recommender score is added) is compared with an untrained `paper`-recipe model (no score head, 0 steps, random level)
on the same users, so which is "better" and which "worse" is clear.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from llara import champion as registry
from llara.errors import InputError

from _flow_helpers import SYNTH_DIR, child_env, dvc, make_workspace
from _llm_helpers import make_tiny_llm

WEAK = ["finetune.recipe=paper", "finetune.profiles.default.steps=0"]  # as one-run overrides


def sequential_interactions(path: Path, users: int, per_user: int, n_items: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp"])
        for u in range(1, users + 1):
            start = rng.randint(1, n_items)
            for t in range(per_user):
                w.writerow([u, (start + t - 1) % n_items + 1, 1_000_000 + 100 * t + u])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer_dir) -> Path:  # noqa: F811
    root = make_workspace(tmp_path_factory.mktemp("champion") / "ws", n_items=40)
    sequential_interactions(root / SYNTH_DIR / "interactions.csv", users=200, per_user=12, n_items=40)
    make_tiny_llm(tokenizer_dir, root / "tiny-llm")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["split"].update(protocols=["paper"])
    params["pretrain"].update(backbones=["sasrec"], epochs=30, patience=3)
    params["llm"].update(model="tiny-llm", dtype="float32", device="cpu")
    params["finetune"]["variants"] = ["hybrid-curriculum"]
    params["finetune"]["profiles"]["default"].update(steps=3, batch_size=4, micro_batch=4, warmup_steps=1,
                                                     checkpoint_every=10, compile=False, autocast=False)
    params["evaluate"].update(modes=["rank"])
    # margin 0: no recommender score is added to the LLM's, so a tiny LLM trained for seconds is only a little better
    # than an untrained one (+0.10 on 20 users); any loss on the same users then keeps the champion
    params["champion"].update(modes=["rank", "generate"], margin=0.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".dvc" / "config.local").unlink(missing_ok=True)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "champion workspace"]):
        subprocess.run(cmd, cwd=root, check=True, env=child_env())
    return root


def set_weak(root: Path, weak: bool) -> None:
    """Edit params.yaml as a user would: the untrained `paper` recipe, or back to the committed `ours`."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["recipe"] = "paper" if weak else "ours"
    params["finetune"]["profiles"]["default"]["steps"] = 0 if weak else 12
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def night(root: Path, overrides: list[str] | None = None) -> dict:
    from flows.pipeline import pipeline

    statuses = pipeline(repo_root=str(root), targets=["promote"], overrides=overrides)
    assert statuses["promote"] == "ran", statuses
    return json.loads((root / "metrics/champion.json").read_text())


@pytest.mark.integration
def test_champion_challenger_rollback_and_remote_round_trip(workspace: Path, prefect_api, tmp_path: Path,
                                                            monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import CHAMPION_ARTIFACT_KEY

    root = workspace
    remote = tmp_path / "remote"
    monkeypatch.setenv("LLARA_DVC_REMOTE", str(remote))
    champion_dir = root / "data/champion"

    # night 1: a weak model (untrained, no score head) becomes the first champion
    set_weak(root, True)
    first = night(root)
    assert first["decision"]["event"] == "promoted" and first["current"] == "v0001"
    assert "no champion yet" in first["decision"]["reason"]
    assert remote.is_dir() and any(remote.rglob("*")), "a promotion pushes to the default remote"

    # night 2: the trained `ours` recipe: better on the same users, promoted
    set_weak(root, False)
    better = night(root)
    assert better["decision"]["event"] == "promoted" and better["current"] == "v0002", better["decision"]
    diff = better["comparison"]["rank"]["difference"]
    # better on the same users (12 steps of a score head over the affinity features, against an untrained LLM's
    # answer likelihood; no recommender score is added to either)
    assert diff["value"] > 0 and diff["n"] == better["comparison"]["rank"]["champion"]["n"]
    assert set(better["comparison"]) == {"rank", "generate"}
    assert registry.bundle_info(champion_dir)["drift"] == 0.0, "a gain leaves nothing lost since the line's best"

    # night 3: a forced-worse challenger (weak again, another seed; a one-run override, so it runs in a scratch
    # copy that holds the persisted champion too) is not promoted; the champion keeps serving
    worse = night(root, WEAK + ["finetune.seed=1"])
    assert worse["decision"]["event"] == "kept" and worse["current"] == "v0002", worse["decision"]
    assert "worse than the margin" in worse["decision"]["reason"]
    assert registry.current_version(champion_dir) == "v0002"
    assert [e["event"] for e in registry.read_history(champion_dir)] == ["promoted", "promoted", "kept"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[CHAMPION_ARTIFACT_KEY])))
    texts = [str(a.data) for a in artifacts]
    assert any("**Decision: kept**" in t and "| rank |" in t and "### History" in t for t in texts)

    # night 4 with the committed params: the challenger is the champion's model again (DVC's run cache)
    again = night(root)
    assert again["decision"]["event"] == "unchanged" and again["current"] == "v0002"
    assert "up to date" in dvc(root, "status", "promote").stdout

    # rollback restores the previous champion; the rolled-back model is never promoted again
    done = subprocess.run([sys.executable, "-m", "llara", "promote", "--rollback"], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert registry.current_version(champion_dir) == "v0001"
    assert registry.bundle_info(champion_dir)["run_hash"] == first["decision"]["challenger_hash"]
    assert "up to date" in dvc(root, "status", "promote").stdout, "the rollback is recorded in dvc.lock"
    with pytest.raises(InputError, match="no version v0009"):
        registry.rollback(champion_dir, "v0009")

    # the remote round trip: push, fresh clone, pull, nothing to reproduce, recommend without training
    assert dvc(root, "push", "-r", "llara-local", check=False).returncode == 0
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "nights"]):
        subprocess.run(cmd, cwd=root, check=True, env=child_env())
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, env=child_env())
    assert not (clone / "data/champion").exists()
    dvc(clone, "remote", "add", "--local", "--default", "llara-local", str(remote))
    pulled = dvc(clone, "pull", "--with-deps", "promote", check=False)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    status = dvc(clone, "status", "promote")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    rec = subprocess.run([sys.executable, "-m", "llara", "recommend", "data/champion", "--history", "3", "4", "5",
                          "-k", "3", "--device", "cpu"], cwd=clone, env=child_env(), capture_output=True, text=True,
                         timeout=300)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    rows = [line.split("\t") for line in rec.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(r[2].startswith("Synthetic item") for r in rows)
    assert not (clone / "data/runs").exists() or "Running stage" not in status.stdout
    # a base LLM that is no longer the one the champion was trained on (here: one more file in its folder) is one
    # clear error, not an adapter served on other weights
    (clone / "data/llm/base/NOTES.txt").write_text("edited after training\n")
    rec = subprocess.run([sys.executable, "-m", "llara", "recommend", "data/champion", "--history", "3", "4", "5",
                          "-k", "3", "--device", "cpu"], cwd=clone, env=child_env(), capture_output=True, text=True,
                         timeout=300)
    assert rec.returncode != 0 and "not the base LLM run" in rec.stderr and "data/llm/base" in rec.stderr, rec.stderr


def test_decide_margin_and_first_champion():
    hits = {"rank": np.array([1, 0, 1, 1.0]), "generate": np.array([0, 0, 1, 0.0])}
    worse = {"rank": np.array([1, 0, 0, 0.0]), "generate": np.array([0, 0, 1, 0.0])}
    assert registry.decide(None, "rank", 0.02).promote
    comparison = registry.compare(worse, hits)
    assert comparison["rank"]["difference"]["value"] == -0.5
    assert not registry.decide(comparison, "rank", 0.02).promote
    assert registry.decide(comparison, "rank", 0.5).promote  # within the margin
    assert registry.decide(comparison, "generate", 0.0).promote  # equal is not worse


def test_small_losses_night_after_night_cannot_add_up_past_the_margin():
    """Each challenger 1 user in 100 worse than its champion (within the 0.02 margin alone): the second such night
    uses up the margin, the third is refused; a gain pays the losses back (never above 0)."""
    def comparison(change: int) -> dict:
        champion = np.zeros(100)
        champion[:50] = 1
        challenger = champion.copy()
        if change > 0:
            challenger[50:50 + change] = 1  # users the champion misses
        else:
            challenger[:-change] = 0  # users the champion gets
        return registry.compare({"rank": challenger}, {"rank": champion})

    drift, decisions = 0.0, []
    for change in (-1, -1, -1, +3, -1):
        decision = registry.decide(comparison(change), "rank", 0.02, drift)
        decisions.append(decision.promote)
        drift = decision.drift if decision.promote else drift
        assert decision.drift <= 0
    assert decisions == [True, True, False, True, True]
    assert drift == pytest.approx(-0.01)  # -0.02 before the gain, 0 after it (not +0.01), then one more loss
    refused = registry.decide(comparison(-1), "rank", 0.02, -0.02)
    assert not refused.promote and refused.drift == -0.02
    assert "had lost -0.0200 since its best, so -0.0300 in all, which is worse than the margin" in refused.reason


@pytest.mark.integration
def test_recommend_is_the_same_with_1_and_2_dask_workers_and_incremental(workspace: Path, prefect_api,
                                                                         tmp_path: Path, monkeypatch):
    """Runs after the champion test (same workspace): batch recommendations from the champion it left."""
    import shutil

    from flows.pipeline import pipeline
    from flows.recommend import recommend_users, task_runner
    from llara.batch_recommend import read_recommendations, read_state

    monkeypatch.chdir(workspace)
    version = registry.current_version("data/champion")
    assert version, "needs the champion of the previous test"
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        result = recommend_users.with_options(task_runner=task_runner(workers, None))(
            users="all", shard_size=37, k=5, n_candidates=12, out_dir=str(out))
        assert result["shards"] == 6 and result["scored"] == result["users"] == 200
        tables[workers] = read_recommendations(out)
    assert tables[1].equals(tables[2]), "the output depends on the worker count"
    table = tables[2]
    assert table.height == 200 * 5 and table["model_version"].unique().to_list() == [version]
    ranks = table.group_by("user").agg(pl.col("rank"))
    assert ranks.height == 200 and all(r == [1, 2, 3, 4, 5] for r in ranks["rank"].to_list())
    histories = {}
    with open(workspace / SYNTH_DIR / "interactions.csv") as f:
        for row in csv.DictReader(f):
            histories.setdefault(row["user"], set()).add(row["item"])
    assert all(item not in histories[user] for user, item in zip(table["user"], table["item"])), "seen items"
    assert all(title.startswith("Synthetic item") for title in table["title"])

    # incremental: a user with a new interaction and one with a late event (older than anything seen) are re-scored,
    # every other row is carried over unchanged
    ingested = tmp_path / "ingested"
    shutil.copytree(workspace / "data/ingested", ingested)
    interactions = pl.read_parquet(ingested / "interactions.parquet")
    newer = interactions.filter(pl.col("user") == 7).tail(1).with_columns(
        pl.lit(interactions["timestamp"].max() + 1).cast(interactions.schema["timestamp"]).alias("timestamp"))
    late = interactions.filter(pl.col("user") == 11).head(1).with_columns(
        pl.lit(interactions["timestamp"].min() - 1).cast(interactions.schema["timestamp"]).alias("timestamp"))
    pl.concat([interactions, newer, late]).write_parquet(ingested / "interactions.parquet")
    out = tmp_path / "workers-2"
    again = recommend_users.with_options(task_runner=task_runner(2, None))(
        users="active", shard_size=37, k=5, n_candidates=12, out_dir=str(out), ingested=str(ingested))
    assert again["scored"] == 2 and again["users"] == 200
    assert read_state(out)["watermark"] == int(newer["timestamp"][0])
    after = read_recommendations(out)
    originals = dict(zip(pl.read_parquet(ingested / "user_ids.parquet")["id"],
                         pl.read_parquet(ingested / "user_ids.parquet")["original"]))
    changed = [str(originals[7]), str(originals[11])]
    assert after.filter(~pl.col("user").is_in(changed)).equals(table.filter(~pl.col("user").is_in(changed)))

    # a failed run leaves the last output whole, and no staging directory behind: here user 7 has a new interaction
    # and its shard fails (no such device) while the other shards, cut at other boundaries, write their parts
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failing = tmp_path / "ingested-failing"
    shutil.copytree(ingested, failing)
    newest = newer.with_columns((pl.col("timestamp") + 1).cast(interactions.schema["timestamp"]))
    pl.concat([pl.read_parquet(ingested / "interactions.parquet"), newest]).write_parquet(
        failing / "interactions.parquet")
    with pytest.raises(Exception, match="no-such-device"):
        recommend_users.with_options(task_runner=task_runner(2, None))(
            users="active", shard_size=50, k=5, n_candidates=12, out_dir=str(out), ingested=str(failing),
            device="no-such-device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []

    # the real DVC stage in the default graph, through the flow (Dask LocalCluster of params.yaml)
    statuses = pipeline(repo_root=str(workspace), targets=["recommend"])
    assert statuses["recommend"] == "ran"
    staged = read_recommendations(workspace / "data/recommendations")
    assert staged.height == 200 * 10 and staged["model_version"].unique().to_list() == [version]


def test_report_and_artifact_show_the_champion_history(tmp_path: Path):
    from llara.report import ReportConfig, render_html

    history = [{"event": "promoted", "version": "v0001", "reason": "no champion yet"},
               {"event": "kept", "version": "v0001", "reason": "rank HR@1 0.1 vs champion 0.5: worse"}]
    comparison = registry.compare({"rank": np.array([0, 1.0])}, {"rank": np.array([1, 1.0])})
    data = {"comparison": comparison, "decision": {"event": "kept", "reason": "worse"}, "current": "v0001",
            "history": history}
    path = tmp_path / "champion.json"
    path.write_text(json.dumps(data))
    html = render_html(ReportConfig(metrics={"LLaRA": "none.json"}, champion="champion.json"), root=tmp_path)
    assert "Champion history" in html and "Serving: <b>v0001</b>" in html and "rank HR@1 0.1 vs champion 0.5" in html
    text = registry.markdown(data)
    assert "**Decision: kept** – worse" in text and "| rank | 0.5000" in text and "| 2 | kept | v0001 |" in text
    assert "No champion yet" in render_html(ReportConfig(metrics={"LLaRA": "none.json"}, champion="missing.json"),
                                            root=tmp_path)


def test_user_histories_are_original_ids_in_time_order_and_keyed_on_content():
    from llara.batch_recommend import Settings, history_keys, rows_key, user_histories, users_to_score
    from llara.data.idmap import IdMap, IdMaps

    interactions = pl.DataFrame({"user": [2, 1, 2, 1, 1], "item": [1, 2, 3, 1, 3], "timestamp": [5, 1, 5, 0, 1]})
    ids = IdMaps(IdMap.build(pl.Series(["b", "a"])), IdMap.build(pl.Series([10, 20, 30])))
    table = user_histories(interactions, ids)
    assert table.to_dicts() == [{"user": "a", "history": ["10", "20", "30"], "last_timestamp": 1},
                                {"user": "b", "history": ["10", "30"], "last_timestamp": 5}]  # ties keep file order
    keys = history_keys(table)
    state = {"rows_key": "K"}
    assert users_to_score(keys, None, None, "K", "active") == {"a", "b"}  # no last run
    assert users_to_score(keys, state, keys, "K", "active") == set()
    assert users_to_score(keys, state, keys, "K", "all") == {"a", "b"}
    assert users_to_score(keys, {"rows_key": "other"}, keys, "K", "active") == {"a", "b"}
    # a late event: user a gains an item *older* than everything seen (a timestamp watermark would miss it)
    late = pl.concat([interactions, pl.DataFrame({"user": [1], "item": [2], "timestamp": [-1]})])
    assert users_to_score(history_keys(user_histories(late, ids)), state, keys, "K", "active") == {"a"}
    shortened = history_keys(user_histories(interactions.filter(pl.col("timestamp") != 0), ids))  # a removed event
    assert users_to_score(shortened, state, keys, "K", "active") == {"a"}
    newcomer = pl.concat([interactions, pl.DataFrame({"user": [2], "item": [2], "timestamp": [9]})])
    ids3 = IdMaps(IdMap.build(pl.Series(["b", "a"])), ids.items)
    assert users_to_score(history_keys(user_histories(newcomer, ids3)), state, keys, "K", "active") == {"b"}
    # the rows' key: the champion's weights (not its version name), the settings, the code
    bundle = {"version": "v1", "run_hash": "r1", "llm_hash": "l1"}
    assert rows_key(bundle, Settings()) == rows_key({**bundle, "version": "v9"}, Settings())
    assert len({rows_key(bundle, Settings()), rows_key({**bundle, "run_hash": "r2"}, Settings()),
                rows_key(bundle, Settings(k=20)), rows_key(bundle, Settings(rerank=False))}) == 4


def fake_champion(root: Path, hashes: list[str]) -> Path:
    """A champion directory whose versions v0001.. hold models of the given content hashes, each promoted in turn."""
    for i, run_hash in enumerate(hashes, 1):
        version = f"v{i:04d}"
        (root / "versions" / version).mkdir(parents=True)
        (root / "versions" / version / registry.BUNDLE_FILE).write_text(json.dumps({"version": version,
                                                                                  "run_hash": run_hash}))
        registry.record(root, {"event": "promoted", "version": version}, version)
    return root


def test_a_second_rollback_goes_further_back_never_to_the_model_rolled_back_from(tmp_path):
    champion_dir = fake_champion(tmp_path / "champion", ["h1", "h2", "h3"])
    assert registry.rollback(champion_dir)["version"] == "v0002"
    assert registry.rollback(champion_dir)["version"] == "v0001"  # not v0003, which was rolled back from
    assert registry.current_version(champion_dir) == "v0001"
    for version in ("v0003", "v0002"):
        with pytest.raises(InputError, match=f"{version} holds the current model or one rolled back from"):
            registry.rollback(champion_dir, version)
    with pytest.raises(InputError, match="no earlier version to roll back to from v0001"):
        registry.rollback(champion_dir)


def test_rollback_passes_over_a_version_of_the_current_model(tmp_path):
    """The same run promoted twice (e.g. again after a crash): rolling back from it skips its other copy."""
    champion_dir = fake_champion(tmp_path / "champion", ["h1", "h2", "h2"])
    assert registry.rollback(champion_dir)["version"] == "v0001"


def test_a_decision_recorded_in_the_history_is_completed_after_a_crash(tmp_path):
    """A crash after the history was written and before CURRENT: the recorded promotion is the one served."""
    champion_dir = fake_champion(tmp_path / "champion", ["h1", "h2"])
    (champion_dir / "versions/v0003").mkdir()
    (champion_dir / "versions/v0003" / registry.BUNDLE_FILE).write_text(json.dumps({"version": "v0003",
                                                                                  "run_hash": "h3"}))
    history = registry.read_history(champion_dir) + [{"event": "promoted", "version": "v0003"}]
    (champion_dir / registry.HISTORY_FILE).write_text(json.dumps(history))  # CURRENT still says v0002
    assert registry.current_version(champion_dir) == "v0003"
    assert (champion_dir / registry.CURRENT_FILE).read_text().strip() == "v0003"
    assert registry.bundle_info(champion_dir)["run_hash"] == "h3"
