"""Self-contained HTML reports: tables, PNG figures embedded as base64, provenance.

A report is one file a researcher can mail or archive: no external CSS,
scripts or images. Figures are drawn with matplotlib's non-interactive Agg
backend.
"""

from __future__ import annotations

import base64
import html
import io
import platform
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shotline.core.version import package_version

__all__ = ["HtmlReport", "figure_png_b64", "provenance_block", "software_versions"]


def software_versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import matplotlib
    import scipy

    return {
        "shotline": package_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def figure_png_b64(fig) -> str:
    """A matplotlib figure as base64 PNG text (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "—"
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:,.2f}"
    return html.escape(str(v))


def provenance_block(prov: dict[str, Any]) -> list[tuple[str, Any]]:
    """Flatten a provenance dict into (key, value) rows (nested dicts as ``a.b``)."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, obj))

    walk("", prov)
    return rows


class HtmlReport:
    """Builds a single self-contained HTML page."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> None:
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig, caption: str) -> None:
        b64 = figure_png_b64(fig)
        self.parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def key_values(self, rows: Iterable[tuple[str, Any]], caption: str | None = None) -> None:
        self.table(["key", "value"], rows, caption)

    def render(self) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
            "caption{text-align:left;font-weight:600;padding:4px 0}"
            "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
        )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return (
            f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"<p>Generated {stamp} by shotline {html.escape(package_version())}.</p>"
            + "\n".join(self.parts)
            + "</body></html>\n"
        )
