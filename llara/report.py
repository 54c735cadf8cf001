"""One self-contained HTML report: metrics tables, ablation chart, training curves, example recommendations.

Reads what the pipeline wrote (metrics JSON ``{split: {model: {metric: {"value","ci95","n"}}}}``, possibly nested one
level deeper as ``{model: {"generate": {...}, "rank": {...}}}``; DVC plot files; prediction parquets) and tolerates
absence: a missing metrics file is shown as "not run", missing curves/predictions as a note. Charts are matplotlib
PNGs embedded as base64, so the file can be mailed or opened offline. Metrics files are read by
:mod:`llara.metrics_files` (the flows use it too).
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from llara.atomic import atomic_path
from llara.contribution import contribution_html, contribution_rows, is_learning_curve, learning_groups, learning_png
from llara.data.idmap import id_maps_beside
from llara.errors import ConfigError, InputError, require_config, require_range
from llara.metrics_files import MetricRow, format_summary, grouped, load_metrics, metric_rows

CURVE_X = ("step", "global_step", "iteration", "epoch")


@dataclass
class ReportConfig:
    """What the report reads and shows (paths and globs relative to the report's root folder). ``split_file``'s
    ``{protocol}`` and ``{split}`` are a predictions file's grandparent and parent folders
    (data/eval/<protocol>/<split>/<variant>.parquet)."""

    __pydantic_config__ = {"extra": "forbid"}  # params.yaml (report): an unknown key is an error

    out: str = "reports/index.html"
    metrics: dict[str, str] = field(default_factory=lambda: {"Recommenders": "metrics/recommenders.json",
                                                             "LLaRA": "metrics/llara.json",
                                                             "LLaRA leave-one-out": "metrics/llara_leave-one-out.json"})
    plots: list[str] = field(default_factory=lambda: ["metrics/**/*.csv", "metrics/**/*.tsv"])
    predictions: list[str] = field(default_factory=lambda: ["data/eval/*/test/*.parquet"])
    items: str = "data/ingested/items.parquet"
    split_file: str = "data/split/{protocol}/{split}.parquet"
    chart_metric: str = "hr@1"
    n_examples: int = 5
    top_k: int = 5
    title: str = "LLaRA pipeline report"
    champion: str = "metrics/champion.json"  # champion/challenger decisions and history (stage promote)

    def validate(self) -> None:
        """Range checks; a :class:`~llara.errors.ConfigError` names the field."""
        require_config(len(self.metrics) > 0, "metrics", "needs at least one LABEL: PATH")
        require_config(len(self.chart_metric) > 0, "chart_metric", "must not be empty")
        require_range("n_examples", self.n_examples, 0, 100)
        require_range("top_k", self.top_k, 1, 100)
        try:
            self.split_file.format(split="test", protocol="paper")
        except (KeyError, IndexError, ValueError):
            raise ConfigError("split_file", "only the placeholders {split} and {protocol} are allowed") from None


def expand_globs(patterns: list[str], root: Path = Path(".")) -> list[Path]:
    """Files matching ``patterns`` under ``root`` (``**`` recurses), sorted, without duplicates."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if Path(p).is_file())
    return sorted(found)


# ------------------------------------------------------------------------------------------------------ charts ---
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def ablation_png(rows: list[MetricRow], split: str, metric: str = "hr@1") -> bytes | None:
    """Horizontal bars of ``metric`` per model/variant for one split, CI95 as error bars; None if nothing to plot."""
    chosen = [r for r in rows if r.split == split and r.metric.rsplit("/", 1)[-1] == metric
              and not r.metric.startswith("paired_vs_recommender/")]  # differences, not HR@1s
    if not chosen:
        return None
    labels = [r.model + (f" ({r.metric.rsplit('/', 1)[0]})" if "/" in r.metric else "") for r in chosen]
    values = [r.value for r in chosen]
    low = [max(0.0, r.value - r.ci95[0]) if r.ci95 else 0.0 for r in chosen]
    high = [max(0.0, r.ci95[1] - r.value) if r.ci95 else 0.0 for r in chosen]
    fig = _figure(7.5, 0.45 * len(chosen) + 1.2)
    ax = fig.add_subplot()
    ax.barh(range(len(chosen)), values, xerr=[low, high], color="#4c72b0", ecolor="#333333", capsize=3)
    ax.set_yticks(range(len(chosen)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (95% bootstrap CI)")
    ax.set_title(f"{metric} per model / variant — {split}")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def read_curve(path: Path) -> pl.DataFrame:
    """A DVC plot file (csv, tsv, json list of records or {name: [records]}, jsonl) as a table."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=None)
    if suffix == ".jsonl":
        return pl.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    data = json.loads(path.read_text())
    if isinstance(data, dict):  # DVC also accepts {"train": [records]}: take the first list of records
        data = next((v for v in data.values() if isinstance(v, list)), [])
    return pl.DataFrame(data)


def scale_groups(columns: dict[str, list[float]], factor: float = 10.0) -> list[list[str]]:
    """Group series whose largest magnitudes lie within ``factor`` of each other (one axis per group), so a learning
    rate or an example counter does not flatten a loss curve."""
    peaks = {c: max((abs(v) for v in values if v == v), default=0.0) for c, values in columns.items()}
    groups: list[list[str]] = []
    for column in sorted(columns, key=lambda c: -peaks[c]):
        top = groups[-1][0] if groups else None
        if top is not None and peaks[column] * factor >= peaks[top]:
            groups[-1].append(column)
        else:
            groups.append([column])
    return groups


def is_table(df: pl.DataFrame) -> bool:
    """A plot file that is a table, not a curve: no step column and a text column naming its rows (HR@1 per variant
    and mode, a comparison of answer scores). A line over its row numbers would mean nothing: it is shown as a table."""
    return not any(c in df.columns for c in CURVE_X) and any(t == pl.String for t in df.schema.values())


def curve_png(path: Path) -> bytes | None:
    """Numeric columns of a plot file against its step column (else the row number), one panel per value scale;
    None if nothing numeric."""
    df = read_curve(path)
    x_name = next((c for c in CURVE_X if c in df.columns), None)
    numeric = [c for c, t in df.schema.items() if t.is_numeric() and c != x_name and df[c].drop_nulls().len() > 0]
    if df.height == 0 or not numeric:
        return None
    x = df[x_name].to_list() if x_name else list(range(df.height))
    series = {c: df[c].cast(pl.Float64).to_list() for c in numeric}
    groups = scale_groups(series)
    fig = _figure(7.5, 2.2 + 1.6 * len(groups))
    for index, group in enumerate(groups):
        ax = fig.add_subplot(len(groups), 1, index + 1)
        for column in sorted(group, key=numeric.index):
            ax.plot(x, series[column], label=column, linewidth=1.2)
        if index == 0:
            ax.set_title(str(path))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(x_name or "row")
    return _png(fig)


# ---------------------------------------------------------------------------------------------------- examples ---
@dataclass(frozen=True)
class Example:
    user: int | str  # the dataset's original user id
    history: list[str]
    ranked: list[tuple[str, bool]]  # (title, is the true next item), best first
    target: str
    target_rank: int | None  # 1-based rank of the true item among the candidates, None when unknown
    ranking_known: bool


def _ranking(row: dict) -> tuple[list[int], bool]:
    """(the candidates the model ranked, best first; whether that is a ranking): all of them by their scores, or
    only the one answer generate named, or the stored order (not a ranking) when neither was kept."""
    candidates = list(row.get("candidates") or [])
    if row.get("ranked"):
        return list(row["ranked"]), True
    scores = row.get("scores")
    if scores is not None and len(scores) == len(candidates):
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
        return [candidates[i] for i in order], True
    picked = next((row.get(c) for c in ("top_item", "prediction", "generated_item") if row.get(c) is not None), None)
    if picked is not None:  # one answer (generate mode): the rest of the candidates are not ranked
        return [picked], True
    return candidates, False


def split_file_for(predictions: Path, template: str) -> Path:
    """``template`` with ``{split}``/``{protocol}`` taken from the predictions file's parent/grandparent folder."""
    return Path(template.format(split=predictions.parent.name, protocol=predictions.parent.parent.name))


def load_examples(predictions: Path, items: Path, split_file: Path | None, n: int) -> list[Example]:
    """The first ``n`` users (by id) of a predictions parquet, with titles; history/candidates come from the
    predictions when present, else from ``split_file`` (joined on ``row``, the split row index, else ``user``)."""
    df = pl.read_parquet(predictions)
    if "user" not in df.columns:
        raise InputError(predictions, f"predictions need a 'user' column; found {df.columns}")
    if not {"history", "candidates"} <= set(df.columns):
        if split_file is None or not split_file.is_file():
            raise InputError(predictions, f"no history/candidates columns and no split file at {split_file}")
        split = pl.read_parquet(split_file).with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
        key = "row" if "row" in df.columns else "user"
        wanted = [c for c in ("history", "candidates", "target", "user", "row") if c not in df.columns or c == key]
        df = df.with_columns(pl.col(key).cast(pl.Int64)).join(split.select(wanted), on=key, how="inner")
    titles = dict(zip(*pl.read_parquet(items).select("item", "title").to_dict(as_series=False).values()))
    df = df.sort("user").head(n)
    users = id_maps_beside(items).users.to_original(df["user"].cast(pl.Int64)).to_list()
    examples = []
    for row, user in zip(df.iter_rows(named=True), users):
        ranked, known = _ranking(row)
        target = row.get("target")
        examples.append(Example(
            user=user if user is not None else int(row["user"]),
            history=[titles.get(i, f"item {i}") for i in row["history"]],
            ranked=[(titles.get(i, f"item {i}"), i == target) for i in ranked],
            target=titles.get(target, f"item {target}"),
            target_rank=ranked.index(target) + 1 if target in ranked and known else None,
            ranking_known=known,
        ))
    return examples


# -------------------------------------------------------------------------------------------------------- html ---
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f0f0f0}.notrun{color:#a00;font-style:italic}.hit{font-weight:bold;color:#070}
.note{color:#666;font-style:italic}img{max-width:100%;border:1px solid #eee}ol{margin:.2em 0}"""


def _e(text) -> str:
    return html.escape(str(text))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _metrics_html(label: str, path: Path, rows: list[MetricRow] | None) -> str:
    out = [f"<h3>{_e(label)} <small>({_e(path)})</small></h3>"]
    if rows is None:
        return out[0] + '<p class="notrun">not run</p>'
    for split, (names, models) in grouped(rows).items():
        out.append(f'<table class="metrics" data-split="{_e(split)}"><caption>{_e(split)}</caption><tr><th>model</th>')
        out.append("".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
        for model, cells in models.items():
            out.append(f"<tr><td>{_e(model)}</td>" + "".join(
                f"<td>{_e(format_summary(cells[n]))}</td>" if n in cells else "<td></td>" for n in names) + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _examples_html(path: Path, examples: list[Example], top_k: int) -> str:
    out = [f"<h3>{_e(path)}</h3><table class=\"examples\"><tr><th>user</th><th>history (oldest first)</th>"
           f"<th>top {top_k} of the candidates</th><th>true next item</th></tr>"]
    for ex in examples:
        ranked = "".join(f'<li class="hit">{_e(t)} ✔</li>' if hit else f"<li>{_e(t)}</li>" for t, hit in ex.ranked[:top_k])
        rank = (f" (rank {ex.target_rank})" if ex.target_rank else
                " (not the model's answer)" if ex.ranking_known else " (no ranking stored)")
        out.append(f"<tr><td>{ex.user}</td><td>{_e(' → '.join(ex.history))}</td><td><ol>{ranked}</ol></td>"
                   f"<td>{_e(ex.target)}{_e(rank)}</td></tr>")
    return "\n".join(out) + "</table>"


def _table_html(path: Path, df: pl.DataFrame, max_rows: int = 50) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else _e("" if v is None else v)  # noqa: E731
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in df.head(max_rows).rows())
    more = f'<p class="note">{df.height - max_rows} more rows in the file</p>' if df.height > max_rows else ""
    return f'<table class="plot-table"><caption>{_e(path)}</caption><tr>{head}</tr>{rows}</table>{more}'


def _champion_html(path: Path) -> str:
    """The champion's history (stage ``promote``): one row per nightly decision."""
    data = load_metrics(path)
    if not data:
        return "<p>No champion yet: stage <code>promote</code> has produced none.</p>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{_e(e.get('event'))}</td><td>{_e(e.get('version') or '–')}</td><td>{_e(e.get('reason', ''))}"
        "</td></tr>" for i, e in enumerate(data.get("history", []), 1))
    return (f"<p>Serving: <b>{_e(data.get('current') or 'none')}</b></p><table><tr><th>#</th><th>event</th>"
            f"<th>version</th><th>reason</th></tr>{rows}</table>")


def render_html(config: ReportConfig, root: Path = Path(".")) -> str:
    """The report as one HTML string (deterministic for the same inputs); paths are relative to ``root``."""
    body = [f"<h1>{_e(config.title)}</h1>", "<h2>Metrics</h2>",
            "<p>Each cell: value [95% bootstrap CI] and n (users). HitRatio@1 counts invalid answers as misses.</p>"]
    all_rows: list[MetricRow] = []
    contributions: list[str] = []
    config.validate()
    for label, name in config.metrics.items():
        path = root / name
        data = load_metrics(path)
        rows = None if data is None else metric_rows(data)
        all_rows += rows or []
        body.append(_metrics_html(label, path, rows))
        if data and contribution_rows(data):
            contributions.append(contribution_html(data, _e))
    body.append("<h2>What the LLM contributes</h2>")
    body += contributions or ['<p class="note">no LLaRA metrics with a recommender comparison yet</p>']
    body.append("<h2>Champion history</h2>")
    body.append(_champion_html(root / config.champion))
    body.append(f"<h2>Ablation: {_e(config.chart_metric)} per variant</h2>")
    charts = [(s, ablation_png(all_rows, s, config.chart_metric)) for s in dict.fromkeys(r.split for r in all_rows)]
    charts = [(s, png) for s, png in charts if png]
    body += [_img(png, f"{config.chart_metric} {s}") for s, png in charts] or [f'<p class="note">no {_e(config.chart_metric)} metrics yet</p>']
    body.append("<h2>Training curves</h2>")
    curves, learning, tables = [], {}, []
    for path in expand_globs(config.plots, root):
        try:
            df = read_curve(path)
            if is_learning_curve(df.columns):
                learning[path.stem] = df
                continue
            if is_table(df):
                tables.append(_table_html(path, df))
                continue
            png = curve_png(path)
        except Exception as exc:  # a malformed plot file must not sink the whole report
            curves.append(f'<p class="note">{_e(path)}: unreadable ({_e(type(exc).__name__)})</p>')
            continue
        if png:
            curves.append(_img(png, str(path)))
    body += curves or ['<p class="note">no training curves found</p>']
    if tables:
        body.append("<h2>Tables</h2>")
        body += tables
    body.append("<h2>Learning curves</h2>")
    charts = [(users, learning_png(group, _figure, _png, users)) for users, group in learning_groups(learning).items()]
    body += [_img(png, f"learning curves, {users}") for users, png in charts if png] or [
        '<p class="note">no learning curves (bench/bench_learning.py)</p>']
    body.append("<h2>Example recommendations</h2>")
    examples = []
    for path in expand_globs(config.predictions, root):
        try:
            split_file = root / split_file_for(path, config.split_file)
            rows = load_examples(path, root / config.items, split_file, config.n_examples)
        except (InputError, pl.exceptions.PolarsError, OSError, KeyError) as exc:
            examples.append(f'<p class="note">{_e(path)}: skipped ({_e(str(exc).splitlines()[0])})</p>')
            continue
        examples.append(_examples_html(path, rows, config.top_k))
    body += examples or ['<p class="note">no predictions found</p>']
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(config.title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(config: ReportConfig, root: Path = Path(".")) -> Path:
    """Render the report and write it atomically to ``root / config.out``."""
    text = render_html(config, root)
    out = root / config.out
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)  # a report is for reading (mkstemp creates 0600)
    return out
