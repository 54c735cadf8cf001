"""Documentation stays current: every params.yaml key is documented, the CLI's commands and the bench scripts all have
--help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llara.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def documented_keys(text: str) -> set[str]:
    """Backticked dotted keys of docs/params.md; `.x` shorthands expand against the previous full key in the line."""
    keys = set()
    for line in text.splitlines():
        last = None
        for token in re.findall(r"`([^`]+)`", line):
            if token.startswith(".") and last:
                keys.add(last.rsplit(".", 1)[0] + token)
            elif "." in token and " " not in token:
                keys.add(token)
                last = token
    return keys


def documented(key: str, keys: set[str]) -> bool:
    """Documented itself, as a map entry (``profiles.<name>.steps``) or through a documented parent (``x.*``, ``x``)."""
    parts = key.split(".")
    generalized = {".".join(parts[:i] + ["<name>"] + parts[i + 1 :]) for i in range(1, len(parts) - 1)}
    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
    wildcards = {".".join(parts[:i] + ["<backbone>", "*"]) for i in range(1, len(parts) - 1)}  # pretrain.<backbone>.*
    return bool(({key} | generalized | parents | {p + ".*" for p in parents} | wildcards) & keys)


def test_every_params_key_is_documented():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = documented_keys((ROOT / "docs/params.md").read_text())
    missing = [k for k in leaf_keys(params) if not documented(k, keys)]
    assert not missing, f"params.yaml keys missing from docs/params.md: {missing}"


def test_every_cli_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse keeps them here)
    assert {"ingest", "split"} <= set(commands)
    for name, sub in commands.items():
        help_text = sub.format_help()
        assert name in help_text and len(help_text) > 80, name


BENCH_SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if "argparse" in p.read_text())


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_every_bench_script_prints_its_help(script):
    """``--help`` runs nothing and prints the usage (a ``%`` in a help string once broke one)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), (script, done.stderr[-500:])


def test_readme_quick_start_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no quick start code block"
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci/run").read_text()
    test_command = commands[1].split("#")[0].strip()
    assert test_command.split()[:2] == ["bash", "scripts/test.sh"] and "scripts/test.sh" in ci


def documented_defaults(text: str) -> dict[str, str]:
    """docs/params.md table rows ``| `key` | `value` | ...`` with one key and one backticked value."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[\w.]+`", cells[0]) and re.fullmatch(r"`[^`]*`", cells[1]):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def shows(text: str, value) -> bool:
    """Whether a docs cell shows ``value`` (YAML flow syntax; a string or a one-element list as it is)."""
    if isinstance(value, str) or (isinstance(value, list) and len(value) == 1 and text == value[0]):
        return text == (value if isinstance(value, str) else value[0])
    try:
        return yaml.safe_load(text) == value
    except yaml.YAMLError:
        return False


def test_documented_defaults_are_params_yaml_values():
    """The default column of docs/params.md is params.yaml's value (a stale copy would mislead)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    wrong = {}
    for key, text in documented_defaults((ROOT / "docs/params.md").read_text()).items():
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (dict, type(None))) and text != "null":
            continue  # a map entry (`profiles.<name>...`) or a key shown by example
        if not shows(text, node):
            wrong[key] = (text, node)
    assert not wrong, f"docs/params.md default vs params.yaml: {wrong}"


def test_docs_name_every_registered_protocol_and_backbone():
    """The names lists come from the registries; the docs that list them name each one."""
    from llara.data.split import PROTOCOLS
    from llara.recommenders.registry import FAMILIES

    rows = {line.split("|")[1].strip(): line for line in (ROOT / "docs/params.md").read_text().splitlines()
            if line.startswith("| `")}
    assert all(f"`{name}`" in rows["`split.protocols`"] for name in PROTOCOLS)
    assert all(f"`{name}`" in rows["`pretrain.backbones`"] for name in FAMILIES)
    recommenders = (ROOT / "docs/recommenders.md").read_text()
    assert all(f"`{name}`" in recommenders for name in FAMILIES), "docs/recommenders.md: a backbone is missing"
