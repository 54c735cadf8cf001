"""The bundle a device run of ``bench/bench_gpu.py`` reads (written by ``bench_gpu.py prepare``): split rows and titles
as gzipped JSON, the frozen recommender (config, weights, item ids), the resolved recipe configs and the base LLM's
config and tokenizer, all readable without polars; and the GGUF's parts, each small enough to carry."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from llara.llm.data import Example
from llara.recommenders.api import Recommender

LLM_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "chat_template.jinja")


def write_bundle(out: Path, rows: dict[str, list[Example]], titles: dict[int, str], recommender: Recommender,
                 llm_dir: Path, configs: dict) -> Path:
    """The bundle a device run needs, without the LLM's weights. ``configs``: {"prompts", "dtype", "variant",
    "recipes": {name: {"train": TrainConfig fields, "model": ModelConfig fields}}}."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "recommender").mkdir(exist_ok=True)
    model = recommender.model
    (out / "recommender" / "config.json").write_text(json.dumps(
        {"family": model.family, "config": model.config.to_dict(), "items": recommender.index.ids.tolist()}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "recommender" / "model.safetensors")
    (out / "configs.json").write_text(json.dumps(configs, indent=1, sort_keys=True))
    for part, examples in rows.items():
        with gzip.open(out / f"{part}.json.gz", "wt") as fh:
            json.dump([[e.user, list(e.history), e.target, list(e.candidates)] for e in examples], fh)
    with gzip.open(out / "titles.json.gz", "wt") as fh:
        json.dump({str(k): v for k, v in titles.items()}, fh)
    (out / "llm").mkdir(exist_ok=True)
    for name in LLM_FILES:
        if (llm_dir / name).is_file():
            shutil.copy2(llm_dir / name, out / "llm" / name)
    return out


def read_rows(bundle: Path, part: str) -> list[Example]:
    with gzip.open(bundle / f"{part}.json.gz", "rt") as fh:
        return [Example(i, u, tuple(h), t, tuple(c)) for i, (u, h, t, c) in enumerate(json.load(fh))]


def read_titles(bundle: Path) -> dict[int, str]:
    with gzip.open(bundle / "titles.json.gz", "rt") as fh:
        return {int(k): v for k, v in json.load(fh).items()}


def read_configs(bundle: Path) -> dict:
    return json.loads((bundle / "configs.json").read_text())


def read_recommender(bundle: Path) -> Recommender:
    """The bundle's frozen recommender (weights loaded strictly), without polars."""
    from safetensors.torch import load_file

    from llara.recommenders.base import ItemIndex
    from llara.recommenders.io import load_state
    from llara.recommenders.registry import build_model

    where = bundle / "recommender" / "config.json"
    meta = json.loads(where.read_text())
    model = build_model(meta["family"], meta["config"], where)
    load_state(model, load_file(bundle / "recommender" / "model.safetensors"), where)
    return Recommender(model, ItemIndex(meta["items"], where), where)


def split_file(path: Path, out: Path, size: int) -> list[Path]:
    parts = []
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            parts.append(out / f"part-{len(parts)}")
            parts[-1].write_bytes(chunk)
    return parts
