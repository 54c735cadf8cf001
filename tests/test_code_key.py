"""Code digests read off the import graph: a key over the code some entry module runs changes with an edit of a
module it imports (at any depth, lazily, relatively or by a registry's string) and not with an edit elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from llara.code_key import code_digest, code_modules

MODULES = {
    "__init__.py": "",
    "entry.py": "from pkg import direct\n\ndef later():\n    import pkg.lazy\n",
    "direct.py": "from .sub import leaf\nREGISTRY = {'x': 'pkg.by_name:Model'}\n",
    "lazy.py": "import os\n",
    "by_name.py": "class Model: ...\n",
    "unrelated.py": "import pkg.direct\n",
    "sub/__init__.py": "VALUE = 1\n",
    "sub/leaf.py": "from .. import lazy\n",
}


@pytest.fixture
def pkg(tmp_path) -> Path:
    root = tmp_path / "pkg"
    for name, text in MODULES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_code_modules_follow_every_kind_of_import(pkg):
    assert set(code_modules("pkg.entry", package_dir=pkg)) == {
        "pkg", "pkg.entry", "pkg.direct", "pkg.lazy", "pkg.by_name", "pkg.sub", "pkg.sub.leaf"}
    assert code_modules("pkg.sub.leaf", package_dir=pkg)["pkg.sub"] == pkg / "sub" / "__init__.py"
    with pytest.raises(ModuleNotFoundError, match="pkg.missing"):
        code_modules("pkg.missing", package_dir=pkg)


@pytest.mark.parametrize("edited, changes", [("unrelated.py", False), ("sub/leaf.py", True), ("by_name.py", True),
                                             ("sub/__init__.py", True), ("lazy.py", True)])
def test_code_digest_changes_only_with_the_code_run(pkg, edited, changes):
    before = code_digest("pkg.entry", package_dir=pkg)
    with (pkg / edited).open("a") as fh:
        fh.write("# edited\n")
    assert (code_digest("pkg.entry", package_dir=pkg) != before) is changes


def test_the_training_and_serving_keys_cover_what_they_run():
    """On the real package: training covers the model, prompts, checkpoint choice and the recommender families (named
    by strings in their registry), not serving; serving covers the scoring it runs, not the training loop."""
    training = code_modules("llara.llm.workflow")
    assert {"llara.llm.training", "llara.llm.model", "llara.llm.prompts", "llara.llm.selection",
            "llara.recommenders.sasrec", "llara.recommenders.caser"} <= set(training)
    assert not {"llara.llm.recommend", "llara.batch_recommend", "llara.report", "llara.contribution"} & set(training)
    serving = code_modules("llara.batch_recommend")
    assert {"llara.llm.scoring", "llara.llm.model", "llara.champion"} <= set(serving)
    assert "llara.llm.training" not in serving
