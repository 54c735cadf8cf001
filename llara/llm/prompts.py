"""Prompt templates (data files under ``llara/resources/prompts``) and tokenized LLaRA prompts.

A template is one line with ``[HistoryHere]``, ``[CansHere]`` and optionally ``[NumCans]`` (the real candidate count).
Items are rendered per mode:

- ``hybrid``: ``<title> [HistoryEmb]`` in the history, ``<title> [CansEmb]`` among the candidates (the paper's);
  with ``token_first`` the behavioural token comes before its title (``[CansEmb] <title>``), so the title's tokens can
  attend to it (what generation copies is then right after what marks it);
- ``text``: titles alone, or with ``text_token_id`` each title with the constant ``[PH]`` token where the behavioural
  token would be (the authors' text-only prompts: the same layout as hybrid); ``id``: the placeholder alone (ablation).

Prompts are tokenized piecewise (template fragments, each title once, the separator), so a placeholder is always
exactly one token and every candidate's last token (its *anchor*) has a known position. The answer is
``" " + title`` followed by the EOS token (the end marker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

from llara.errors import InputError, require

ITEM_MODES = ("hybrid", "text", "id")
DOMAINS = ("movie", "game", "artist", "item")
_SLOT = re.compile(r"(\[HistoryHere\]|\[CansHere\])")
SEPARATOR = ","


@dataclass(frozen=True)
class Template:
    text: str

    def parts(self, n_candidates: int) -> list[str]:
        """Literal fragments and slots in order, ``[NumCans]`` filled in."""
        return [p for p in _SLOT.split(self.text.replace("[NumCans]", str(n_candidates))) if p != ""]


def parse_templates(text: str, where: str | Path) -> list[Template]:
    templates = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for slot in ("[HistoryHere]", "[CansHere]"):
            require(line.count(slot) == 1, f"{where}:{lineno}", f"template must contain {slot} exactly once")
        templates.append(Template(line))
    require(len(templates) > 0, where, "no templates")
    return templates


def load_templates(domain_or_path: str) -> list[Template]:
    """Templates of a built-in domain (movie, game, artist, item) or of a text file (one per line, # comments)."""
    if domain_or_path in DOMAINS:
        text = resources.files("llara.resources").joinpath("prompts").joinpath(f"{domain_or_path}.txt").read_text()
        return parse_templates(text, f"prompts/{domain_or_path}.txt")
    path = Path(domain_or_path)
    require(path.is_file(), path, f"prompt file not found (or use a domain: {', '.join(DOMAINS)})")
    return parse_templates(path.read_text(), path)


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    mode: str
    history_items: list[int] = field(default_factory=list)  # one per [HistoryEmb] token, in order
    candidate_items: list[int] = field(default_factory=list)  # one per [CansEmb] token, in order
    anchors: list[int] = field(default_factory=list)  # position of each candidate's last token


class PromptEncoder:
    """Tokenizes LLaRA prompts and answers; caches each title's tokens."""

    def __init__(self, tokenizer, templates: Sequence[Template], titles: Mapping[int, str],
                 history_token_id: int, candidate_token_id: int, *, text_token_id: int | None = None,
                 token_first: bool = False):
        self.tokenizer = tokenizer
        self.templates = list(templates)
        self.titles = titles
        self.history_token_id = history_token_id
        self.candidate_token_id = candidate_token_id
        self.text_token_id = text_token_id
        self.token_first = token_first
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.bos = [i for i in tokenizer("", add_special_tokens=True).input_ids if i != self.eos_token_id]
        self.sep = self._tok(SEPARATOR)
        self._title_ids: dict[int, list[int]] = {}
        self._parts: dict[tuple[int, int], list] = {}

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def title(self, item: int) -> str:
        title = self.titles.get(int(item))
        if title is None:
            raise InputError("items", f"item {item} has no title in the item table")
        return title

    def title_ids(self, item: int) -> list[int]:
        ids = self._title_ids.get(item)
        if ids is None:
            ids = self._title_ids[item] = self._tok(" " + self.title(item))
        return ids

    def answer_ids(self, item: int) -> list[int]:
        """The target continuation: the title tokens then the end marker."""
        return self.title_ids(item) + [self.eos_token_id]

    def _template_parts(self, index: int, n_candidates: int) -> list:
        key = (index, n_candidates)
        if key not in self._parts:
            parts = self.templates[index].parts(n_candidates)
            slots = ("[HistoryHere]", "[CansHere]")
            # titles carry their own leading space, so a fragment's trailing space before a slot is dropped
            self._parts[key] = [p if p in slots else self._tok(p.rstrip(" ") if k + 1 < len(parts) else p)
                                for k, p in enumerate(parts)]
        return self._parts[key]

    def encode(self, history: Sequence[int], candidates: Sequence[int], mode: str, template: int) -> EncodedPrompt:
        require(mode in ITEM_MODES, "mode", f"unknown item mode {mode!r}")
        out = EncodedPrompt(list(self.bos), mode)
        for part in self._template_parts(template, len(candidates)):
            if part == "[HistoryHere]":
                self._items(out, history, self.history_token_id, out.history_items, anchors=False)
            elif part == "[CansHere]":
                self._items(out, candidates, self.candidate_token_id, out.candidate_items, anchors=True)
            else:
                out.input_ids.extend(part)
        return out

    def _items(self, out: EncodedPrompt, items: Sequence[int], token_id: int, slot: list[int], anchors: bool) -> None:
        """Each item as its title and/or token (the anchor is the item's last token)."""
        if out.mode == "text":
            token_id = self.text_token_id  # None: no stand-in
        for k, item in enumerate(items):
            if k:
                out.input_ids.extend(self.sep)
            title = self.title_ids(int(item)) if out.mode != "id" else []
            token = [token_id] if token_id is not None else []
            out.input_ids.extend(token + title if self.token_first else title + token)
            if out.mode != "text":
                slot.append(int(item))
            if anchors:
                out.anchors.append(len(out.input_ids) - 1)

    def render(self, encoded: EncodedPrompt) -> str:
        """Human-readable prompt (placeholders shown as their token text)."""
        return self.tokenizer.decode(encoded.input_ids)
