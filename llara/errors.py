"""Error types that map to the CLI's exit codes (2: bad input or arguments, 1: internal failure)."""

from __future__ import annotations

from pathlib import Path


class LlaraError(Exception):
    """Base class for errors the user can act on."""

    exit_code = 1


class InputError(LlaraError):
    """Bad input: a file, a row, a column, a parameter. Rendered as ``error: <where>: <what>``."""

    exit_code = 2

    def __init__(self, where: str | Path, what: str):
        self.where = str(where)
        self.what = what
        super().__init__(f"{self.where}: {what}")


class RowError(InputError):
    """Rows of a table fail one check: ``rows`` (0-based indices into the checked frame, or its mask) are all of
    them; the message names the first, ``row <rows[0] + line_offset>: <detail>``. Callers that can set rows aside
    (the inbox) use ``rows``; everyone else sees one :class:`InputError`."""

    def __init__(self, where: str | Path, rows, line_offset: int, detail: str):
        if str(getattr(rows, "dtype", "")) == "Boolean":  # a polars mask
            rows = rows.arg_true()
        self.rows = [int(r) for r in rows]
        self.detail = detail
        super().__init__(where, f"row {self.rows[0] + line_offset}: {detail}")


def require(condition: bool, where: str | Path, what: str) -> None:
    """Raise :class:`InputError` unless ``condition`` holds."""
    if not condition:
        raise InputError(where, what)


class ConfigError(InputError):
    """A bad option value. ``key`` is the option's field name in its library config (``n_candidates``); the stage
    adapters report it as ``params.yaml: <section>.<key>: <what>``, the CLI under its option name."""

    def __init__(self, key: str, what: str):
        self.key = key
        super().__init__(key, what)


def require_config(condition: bool, key: str, what: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, what)


def require_range(key: str, value: float, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``low <= value <= high`` (``<`` on an open end; None: no bound)."""
    ok = (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high))
    if ok:
        return
    if high is None:
        raise ConfigError(key, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if low is None:
        raise ConfigError(key, f"must be {'<' if high_open else '<='} {high}, got {value}")
    raise ConfigError(key, f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, got {value}")
