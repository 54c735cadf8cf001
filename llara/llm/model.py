"""The trainable LLaRA model: an LLM (optionally LoRA-wrapped), projectors for the placeholder tokens, and an optional
score head.

The score head (our addition, off in the paper's recipe) scores each candidate from the LLM's hidden state at its
anchor (the candidate's last prompt token). No recommender score is ever added to it: what it ranks is the LLM's own.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from llara.llm.data import IGNORE, Batch
from llara.llm.features import ItemFeatures
from llara.llm.loading import LoadedLLM
from llara.llm.recipes import LORA_TARGETS


@dataclass
class ModelConfig:
    candidate_features: str = "item"  # item (the paper's) | affinity
    token_first: bool = False  # behavioural token before its title (False: after, the paper's layout)
    text_placeholder: bool = True  # text-only prompts keep a constant [PH] token where the behavioural token would be
    score_head: bool = False
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def to_dict(self) -> dict:
        return asdict(self)


def make_projector(in_dim: int, out_dim: int) -> nn.Module:
    """Recommender vectors -> LLM input embeddings: the paper's 2-layer MLP with GELU."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def inject(embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, vectors: torch.Tensor) -> torch.Tensor:
    """``embeds`` with the k-th occurrence (row-major) of ``token_id`` replaced by ``vectors[k]`` (gradients flow into
    ``vectors``; everything else untouched)."""
    mask = input_ids == token_id
    n = int(mask.sum())
    if n != vectors.shape[0]:
        raise ValueError(f"{n} placeholder tokens but {vectors.shape[0]} vectors")
    if n == 0:
        return embeds
    return embeds.masked_scatter(mask.unsqueeze(-1), vectors.to(embeds.dtype))


@contextmanager
def peft_wrapping():
    """Around peft's wrapping of a transformers model: peft (0.21.2, the newest) reads the model's deprecated
    ``is_gradient_checkpointing``, whose FutureWarning says nothing a user of this project can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def add_lora(model, config: ModelConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(config.lora_targets))
    with peft_wrapping():
        return get_peft_model(model, lora)


class LlaraModel(nn.Module):
    def __init__(self, llm: LoadedLLM, features: ItemFeatures, config: ModelConfig, *, peft_model=None):
        super().__init__()
        self.loaded = llm
        self.features = features
        self.config = config
        self.llm = peft_model if peft_model is not None else (add_lora(llm.model, config) if config.lora else llm.model)
        hidden = llm.model.config.hidden_size
        self.history_projector = make_projector(features.dim, hidden)
        if features.candidate_dim == features.dim:
            self.candidate_projector = self.history_projector
        else:
            self.candidate_projector = make_projector(features.candidate_dim, hidden)
        self.head = nn.Linear(hidden, 1) if config.score_head else None
        if self.head is not None:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    # -- parts of the LLM ------------------------------------------------------------------------------------------
    @property
    def causal_lm(self):
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def decoder(self):
        return self.causal_lm.get_decoder()

    @property
    def lm_head(self):
        return self.causal_lm.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    def module_state(self) -> dict[str, torch.Tensor]:
        """Projector + head weights (the LoRA adapter is saved separately)."""
        out = {f"history_projector.{k}": v for k, v in self.history_projector.state_dict().items()}
        if self.candidate_projector is not self.history_projector:
            out.update({f"candidate_projector.{k}": v for k, v in self.candidate_projector.state_dict().items()})
        if self.head is not None:
            out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_module_state(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("history_projector", "candidate_projector", "head"):
            module = getattr(self, name)
            if module is None or (name == "candidate_projector" and module is self.history_projector):
                continue
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})

    def trainable_parameters(self) -> list[nn.Parameter]:
        seen, out = set(), []
        for p in self.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    # -- forward ---------------------------------------------------------------------------------------------------
    def input_embeds(self, batch: Batch, score_noise: float = 0.0,
                     generator: torch.Generator | Sequence[torch.Generator] | None = None):
        """(inputs_embeds, standardized recommender scores (B, C), 1 on rows with placeholders else 0).

        ``generator`` draws the score noise: one for the batch or one per batch row."""
        device = self.device
        ids = batch.input_ids.to(device)
        embeds = self.causal_lm.get_input_embeddings()(ids)
        rows = batch.placeholder_rows
        z = torch.zeros(batch.anchors.shape, device=device)
        has = torch.zeros(len(batch.prompts), device=device)
        if rows:
            hist = self.features.history(batch.history_items).to(device)
            embeds = inject(embeds, ids, self.loaded.history_token_id, self.history_projector(hist))
            sub = [batch.examples[i] for i in rows]
            if isinstance(generator, (list, tuple)):
                generator = [generator[i] for i in rows]
            feats, zr = self.features.candidates([e.history for e in sub], [e.candidates for e in sub],
                                                 noise=score_noise, generator=generator)
            vecs = self.candidate_projector(feats.to(device).flatten(0, 1))
            embeds = inject(embeds, ids, self.loaded.candidate_token_id, vecs)
            z[rows] = zr.to(device)
            has[rows] = 1.0
        return embeds, z, has

    def hidden_states(self, batch: Batch, embeds: torch.Tensor, use_cache: bool = False):
        out = self.decoder(inputs_embeds=embeds, attention_mask=batch.attention_mask.to(self.device),
                           position_ids=batch.position_ids.to(self.device), use_cache=use_cache)
        return out

    def head_scores(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B, C) candidate scores of the score head, read at each candidate's anchor."""
        anchors = batch.anchors.to(hidden.device)
        h = torch.gather(hidden, 1, anchors[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.head(h.float()).squeeze(-1)

    def answer_loss(self, hidden: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy over the answer tokens (prompt and padding masked): their mean, or sum."""
        labels = labels.to(hidden.device)
        target = labels[:, 1:]
        sel = target != IGNORE
        logits = self.lm_head(hidden[:, :-1][sel]).float()
        return nn.functional.cross_entropy(logits, target[sel], reduction=reduction)

    @property
    def attention(self) -> str:
        """The LLM's attention implementation (eager, sdpa, ...)."""
        return self.causal_lm.config._attn_implementation

    def set_attention(self, implementation: str) -> None:
        self.causal_lm.set_attn_implementation(implementation)

    def set_compiled(self, enabled: bool) -> bool:
        """``torch.compile`` every decoder layer (dynamic shapes: one graph serves all sequence lengths and all layers;
        Inductor fuses the norms, rotary, activation and dtype casts around the matmuls), or back to eager. Returns
        False, changing nothing, when the LLM has no ``layers`` list to compile. State-dict keys stay the same."""
        layers = getattr(self.causal_lm.get_decoder(), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            return False
        for layer in layers:
            if enabled:
                layer.compile(dynamic=True)
            else:
                layer._compiled_call_impl = None  # what nn.Module.compile set
        return True

    def merge_lora(self) -> None:
        """Fold the LoRA adapter into the base weights for inference (no adapter matmuls or dtype casts per layer:
        ~30% faster prefill on CPU). The merged weights keep the LLM's dtype, so scores move by its rounding."""
        if hasattr(self.llm, "merge_and_unload"):
            self.llm = self.llm.merge_and_unload()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the LLM's layer activations in the backward pass (non-reentrant; input grads on, as peft needs)."""
        lm = self.causal_lm
        if enabled:
            enable = getattr(lm, "activation_checkpointing_enable", None) or lm.gradient_checkpointing_enable
            enable({"use_reentrant": False})
            lm.enable_input_require_grads()
        else:
            disable = getattr(lm, "activation_checkpointing_disable", None) or lm.gradient_checkpointing_disable
            disable()
            lm.disable_input_require_grads()
