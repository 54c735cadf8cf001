"""``llara promote``: show the champion's history, or roll back to the previous champion (llara/champion.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="show the champion's history or roll back to the previous champion",
                       description="Without options: print the champion and its promotion history. --rollback serves "
                                   "the previous champion again (every version stays in the champion directory; a "
                                   "model rolled back from is never served again, so a second rollback goes further "
                                   "back) and, in a DVC workspace, holding its run lock, records the new state of "
                                   "stage promote's outputs with `dvc commit promote`; `dvc repro recommend` then "
                                   "re-ranks the served recommendations.")
    p.add_argument("--champion", default="data/champion", help="champion directory (default: data/champion)")
    p.add_argument("--rollback", action="store_true", help="serve the previous champion again")
    p.add_argument("--to", default=None, metavar="VERSION", help="with --rollback: this version (e.g. v0002)")
    p.add_argument("--metrics", default="metrics/champion.json",
                   help="summary file rewritten after a rollback (default: metrics/champion.json)")
    p.set_defaults(func=_promote)


def _promote(args: argparse.Namespace) -> int:
    from llara import champion
    from llara.atomic import write_json
    from llara.errors import LlaraError
    from llara.workspace_lock import workspace_lock

    if args.rollback:
        workspace = Path("dvc.yaml").is_file() and "promote" in Path("dvc.yaml").read_text()
        # in a pipeline workspace, not while a (nightly) run is deciding a promotion
        with workspace_lock(Path.cwd()) if workspace else contextlib.nullcontext():
            entry = champion.rollback(args.champion, args.to)
            write_json(champion.summary(args.champion, entry), args.metrics)
            print(entry["reason"])
            if workspace:
                done = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", "promote"],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise LlaraError(f"dvc commit promote failed: {(done.stderr or done.stdout).strip()}")
                print("recorded with `dvc commit promote` (push with `dvc push`); the served recommendations "
                      "(data/recommendations) are the rolled-back model's until `dvc repro recommend` (or the next "
                      "nightly run) re-ranks them with this champion")
        return 0
    history = champion.read_history(args.champion)
    print(json.dumps({"current": champion.current_version(args.champion), "history": history}, indent=2))
    return 0
