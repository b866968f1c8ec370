"""A minimal, self-contained HTML report of a run: metrics, loss curves and images.

The page references images by relative path, so a run folder can be copied or zipped whole.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportSection", "plot_training_curves", "read_metrics_jsonl", "write_html_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
img { image-rendering: pixelated; max-width: 100%; }
"""


@dataclass
class ReportSection:
    """One section of the page: a heading, paragraphs, a key/value table, a grid and images.

    ``grid`` is a table given by rows, the first row its header (e.g. a confusion matrix);
    ``images`` holds ``(path, caption)`` pairs; paths are written relative to the report.
    """

    title: str
    paragraphs: Sequence[str] = ()
    table: Mapping[str, object] = field(default_factory=dict)
    images: Sequence[tuple[str | Path, str]] = ()
    grid: Sequence[Sequence[object]] = ()


def _format_value(value: object) -> tuple[str, bool]:
    if isinstance(value, float):
        return ("n/a" if math.isnan(value) else f"{value:.4f}"), True
    if isinstance(value, int):
        return str(value), True
    return str(value), False


def _section_html(section: ReportSection, root: Path) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f"<p>{html.escape(text)}</p>" for text in section.paragraphs]
    if section.table:
        rows = []
        for key, value in section.table.items():
            text, numeric = _format_value(value)
            cls = ' class="num"' if numeric else ""
            rows.append(
                f"<tr><th>{html.escape(str(key))}</th><td{cls}>{html.escape(text)}</td></tr>"
            )
        parts.append("<table>" + "".join(rows) + "</table>")
    if section.grid:
        header, *body = section.grid
        rows = ["<tr>" + "".join(f"<th>{html.escape(str(v))}</th>" for v in header) + "</tr>"]
        for row in body:
            cells = [f"<th>{html.escape(str(row[0]))}</th>"] if row else []
            for value in row[1:]:
                text, numeric = _format_value(value)
                cls = ' class="num"' if numeric else ""
                cells.append(f"<td{cls}>{html.escape(text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("<table>" + "".join(rows) + "</table>")
    if section.images:
        figures = []
        for path, caption in section.images:
            rel = os.path.relpath(Path(path), root)
            figures.append(
                f'<figure><img src="{html.escape(Path(rel).as_posix())}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append('<div class="gallery">' + "".join(figures) + "</div>")
    return "\n".join(parts)


def write_html_report(path: str | Path, *, title: str, sections: Sequence[ReportSection]) -> Path:
    """Write a standalone HTML page (written to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(_section_html(section, path.parent) for section in sections)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_metrics_jsonl(path: str | Path) -> list[dict]:
    """Read ``metrics.jsonl``; a line that is not valid JSON raises ``ValueError`` naming it."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg})") from error
    return records


def plot_training_curves(records: Sequence[Mapping], path: str | Path) -> Path | None:
    """Plot the loss series of the logged training steps against ``step``; ``None`` if none.

    ``records`` are ``metrics.jsonl`` lines: training lines (``kind == "train"``, or no kind)
    with ``total_loss`` and one ``loss*`` entry per loss term.
    """

    def is_loss(key: str) -> bool:
        return key.startswith("loss") or key == "total_loss"

    steps = [
        r
        for r in records
        if r.get("kind", "train") == "train" and "step" in r and any(is_loss(k) for k in r)
    ]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in steps for k in r if is_loss(k)})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        xs = [r["step"] for r in steps if key in r]
        ys = [r[key] for r in steps if key in r]
        ax.plot(xs, ys, label=key, linewidth=2 if key == "total_loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tracking_curves(
    curves: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str = ""
) -> Path:
    """OTB's success and precision plots side by side, one line per tracker.

    ``curves[name]`` is :meth:`TrackingEvaluator.curves`'s dict (``success``, ``precision``
    and their thresholds); the legend gives each tracker's success AUC and precision at 20 px,
    trackers sorted by AUC as OTB orders them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(curves, key=lambda name: -float(curves[name]["success"].mean()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for name in order:
        c = curves[name]
        auc = float(c["success"].mean())
        left.plot(c["success_thresholds"], c["success"], label=f"{name} [{auc:.3f}]")
        right.plot(
            c["precision_thresholds"],
            c["precision"],
            label=f"{name} [{float(c['precision'][20]):.3f}]",
        )
    left.set(
        xlabel="overlap threshold", ylabel="success rate", title=f"Success plot {title}".strip()
    )
    right.set(
        xlabel="location error threshold (px)",
        ylabel="precision",
        title=f"Precision plot {title}".strip(),
    )
    for axis in (left, right):
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower left" if axis is left else "lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
