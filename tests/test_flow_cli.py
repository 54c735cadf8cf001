"""flows/ from the outside: the `llara run` / `python -m flows` command line (one-line errors, --help), the served
deployments (schedule, prefect.yaml, the failed-runs automation) and experiment variants, on a tiny DVC repo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llara.errors import InputError

from _flow_helpers import child_env


@pytest.mark.integration
def test_cli_plain_dvc_and_one_line_errors(mini_repo: Path):
    env = child_env()
    ok = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo), "make@a"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "Running stage 'make@a'" in ok.stdout and (mini_repo / "out/a.txt").is_file()
    bad = subprocess.run([sys.executable, "-m", "flows", "run", "--no-prefect", "--root", str(mini_repo), "bad"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == ("error: stage 'bad': data.csv: row 3: column 'user' is not "
                                                   "an integer")
    assert "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "llara", "run", "--no-prefect", "--root", str(mini_repo / "nope")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no dvc.yaml" in missing.stderr


def test_cli_help_lists_run_serve_report():
    """`llara run|serve --help` show the options flows/cli.py defines (forwarded to `python -m flows`)."""
    options = {"run": ["--no-prefect", "--set-param", "--force"], "serve": ["--cron", "--timezone", "--inbox"],
               "report": ["--chart-metric"]}
    for command, expected in options.items():
        result = subprocess.run([sys.executable, "-m", "llara", command, "--help"], capture_output=True, text=True,
                                env=child_env(), timeout=60)
        assert result.returncode == 0 and f"usage: llara {command}" in result.stdout
        assert all(option in result.stdout for option in expected), result.stdout
    bad = subprocess.run([sys.executable, "-m", "llara", "run", "--no-such-option"], capture_output=True, text=True,
                         env=child_env(), timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: llara: unrecognized arguments: --no-such-option"


def test_serve_defaults_match_prefect_yaml():
    """The nightly schedule is defined once (flows/serve.py); prefect.yaml's deployment must say the same."""
    from flows.cli import build_parser
    from flows.serve import DEFAULT_INBOX, NIGHTLY_CRON

    args = build_parser().parse_args(["serve"])
    assert (args.cron, args.inbox) == (NIGHTLY_CRON, DEFAULT_INBOX)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == NIGHTLY_CRON and nightly["parameters"]["inbox"] == DEFAULT_INBOX



def test_experiment_variants_checked_before_running(mini_repo: Path):
    from flows.experiments import Variant, check_variants, comparison_markdown

    check_variants(mini_repo, [Variant(name="a", overrides=["split.seed=1"]), Variant(name="b")])
    with pytest.raises(InputError, match="unique"):
        check_variants(mini_repo, [Variant(name="a"), Variant(name="a")])
    with pytest.raises(InputError, match="letters, digits"):
        check_variants(mini_repo, [Variant(name="a b")])
    with pytest.raises(InputError, match="split.seed"):
        check_variants(mini_repo, [Variant(name="a", overrides=["split.seed=-5"])])
    table = comparison_markdown({"a": {"m": {"test": {"sasrec": {"hr@1": {"value": 0.25, "ci95": [0.2, 0.3], "n": 8}}}}},
                                 "b": {"m": None}}, "hr@1")
    assert "| a | m | test | sasrec | 0.2500 [0.2000, 0.3000] n=8 |" in table and "| b | | | | _no hr@1 metrics_ |" in table


def test_prefect_yaml_entrypoints_exist():
    import importlib

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    names = [d["name"] for d in config["deployments"]]
    assert len(set(names)) == len(names) and {"manual", "nightly", "experiments"} <= set(names)
    for deployment in config["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, function)), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "llara-process"
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] and nightly["schedules"][0]["timezone"]


def test_serve_builds_deployments_with_schedule(mini_repo: Path):
    from flows.serve import build_deployments

    manual, nightly, exps = build_deployments(str(mini_repo), cron="15 4 * * 1-5", timezone="America/New_York")
    assert manual.parameters["repo_root"] == str(mini_repo.resolve()) and not manual.schedules
    schedule = nightly.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("15 4 * * 1-5", "America/New_York")
    assert nightly.parameters["inbox"] == "data/inbox" and exps.name == "experiments"
    with pytest.raises(InputError, match="--cron/--timezone"):
        build_deployments(str(mini_repo), cron="not a cron")


@pytest.mark.integration
def test_serve_creates_the_failed_runs_automation_and_pins_the_workspace(mini_repo: Path, prefect_api, monkeypatch):
    from prefect.blocks.notifications import SlackWebhook
    from prefect.client.orchestration import get_client

    from flows.serve import AUTOMATION_NAME, FAILED_RUN_EVENTS, ensure_failure_automation
    from flows.workspace import SERVED_ROOT_ENV, resolve_root

    SlackWebhook(url="http://127.0.0.1:9/hook").save("llara-ops", overwrite=True)
    first = ensure_failure_automation("slack-webhook/llara-ops")
    ensure_failure_automation("slack-webhook/llara-ops")  # idempotent: updated, not duplicated
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION_NAME)
    assert len(found) == 1 and found[0].id == first.id and found[0].enabled
    assert set(found[0].trigger.expect) == set(FAILED_RUN_EVENTS)
    assert found[0].trigger.match_related["prefect.resource.id"] in ("prefect.tag.llara", ["prefect.tag.llara"])
    assert found[0].actions[0].type == "send-notification"
    assert str(found[0].actions[0].block_document_id) == str(SlackWebhook.load("llara-ops")._block_document_id)
    with pytest.raises(InputError, match="--notify: 'slack-webhook/nope'"):
        ensure_failure_automation("slack-webhook/nope")
    monkeypatch.setenv(SERVED_ROOT_ENV, str(mini_repo))
    assert resolve_root(str(mini_repo)) == mini_repo.resolve()
    with pytest.raises(InputError, match="runs of these deployments use the served workspace"):
        resolve_root(str(mini_repo.parent))
