"""Build a LLaRA model from settings, and load a trained run (``final/run.json`` + weights)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from llara.errors import InputError, require
from llara.fingerprint import model_digest, tree_digest
from llara.llm.data import read_titles
from llara.llm.features import ItemFeatures, Recommender
from llara.llm.loading import load_llm
from llara.llm.model import LlaraModel, ModelConfig, peft_wrapping
from llara.llm.prompts import PromptEncoder, load_templates
from llara.llm.recipes import LLMSettings


def load_recommender_dir(path: str | Path) -> Recommender:
    from llara.recommenders import load_recommender  # the frozen sequential recommender (another package)

    return load_recommender(str(path))


def check_embedding_rows(recommender: Recommender, titles: dict[int, str], where: str | Path) -> None:
    """The recommender's item table must match the item table (same item count)."""
    n = getattr(recommender, "n_items", None)
    if n is None and getattr(recommender, "items", None) is not None:
        n = len(recommender.items)
    if n is not None:
        require(int(n) == len(titles), where,
                f"recommender has {n} item embeddings but the item table has {len(titles)} items")


def build(llm_settings: LLMSettings, recommender: Recommender, titles: dict[int, str], prompts: str,
          config: ModelConfig, *, adapter_dir: Path | None = None) -> tuple[LlaraModel, PromptEncoder]:
    llm = load_llm(llm_settings.model, dtype=llm_settings.dtype, device=llm_settings.device,
                   trust_remote_code=llm_settings.trust_remote_code)
    peft_model = None
    if adapter_dir is not None and config.lora:
        from peft import PeftModel

        with peft_wrapping():
            peft_model = PeftModel.from_pretrained(llm.model, str(adapter_dir))
    model = LlaraModel(llm, ItemFeatures(recommender, config.candidate_features), config, peft_model=peft_model)
    model.to(llm.model.device if hasattr(llm.model, "device") else "cpu")
    encoder = PromptEncoder(llm.tokenizer, load_templates(prompts), titles, llm.history_token_id, llm.candidate_token_id,
                            text_token_id=llm.text_token_id if config.text_placeholder else None,
                            token_first=config.token_first)
    return model, encoder


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "final" / "run.json"
    require(path.is_file(), run_dir, "not a trained run (no final/run.json; run `llara finetune` first)")
    return json.loads(path.read_text())


def check_trained_inputs(run_dir: Path, info: dict, used: dict[str, str]) -> None:
    """Each input a run is loaded with (``{"recommender": dir, "items": file, "base LLM": path or hub id}``) must have
    the content it was trained on (run.json's ``inputs``), wherever it lies: a recommender retrained or an item table
    rewritten at the same path would otherwise be paired silently with an adapter that never saw it. Runs that
    recorded no digest for an input are not checked for it."""
    recorded = info.get("inputs", {})
    for name, where in used.items():
        if name not in recorded:
            continue
        digest = model_digest(where) if name == "base LLM" else tree_digest(where)
        require(digest == recorded[name], where,
                f"not the {name} run {run_dir} was trained on (content {digest[:12]} here, {recorded[name][:12]} in "
                f"its run.json inputs); retrain the run, or restore it")


def load_run(run_dir: str | Path, *, recommender: str | Path | None = None, device: str = "auto",
             llm_model: str | None = None, merge: bool = True, items: str | Path | None = None
             ) -> tuple[LlaraModel, PromptEncoder, dict]:
    """A trained run, ready for evaluation (eval mode, frozen); ``merge`` folds the LoRA adapter into the base
    weights (faster; scores differ by the rounding of the LLM's dtype). ``recommender`` (a directory), ``llm_model``
    and ``items`` replace the ones run.json names (a champion bundle carries its own); each is checked to have the
    content the run was trained on (:func:`check_trained_inputs`)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    llm = LLMSettings(**{**info["llm"], "device": device})
    if llm_model:
        llm.model = llm_model
    recommender_dir, items = Path(recommender or info["recommender"]), Path(items or info["items"])
    require(recommender_dir.exists(), recommender_dir, f"the recommender run {run_dir} was trained with is missing")
    require(items.is_file(), items, f"the item table run {run_dir} was trained with is missing")
    check_trained_inputs(run_dir, info, {"recommender": str(recommender_dir), "items": str(items),
                                         "base LLM": llm.model})
    recommender = load_recommender_dir(recommender_dir)
    titles = read_titles(items)
    config = ModelConfig(**{f.name: info["model"][f.name] for f in fields(ModelConfig) if f.name in info["model"]})
    model, encoder = build(llm, recommender, titles, info["prompts"], config, adapter_dir=run_dir / "final" / "adapter")
    modules = run_dir / "final" / "modules.safetensors"
    if not modules.is_file():
        raise InputError(modules, "missing (incomplete run)")
    model.load_module_state(load_file(modules))
    if merge:
        model.merge_lora()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, encoder, info


def eval_item_mode(variant_or_schedule: str) -> str:
    """How a variant's prompts render items at evaluation: text-only and zero-shot read titles, id-only ids."""
    if variant_or_schedule in ("text-only", "zero-shot"):
        return "text"
    if variant_or_schedule == "id-only":
        return "id"
    return "hybrid"
