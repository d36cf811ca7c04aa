"""Self-contained HTML reports with charts, shared by every plugin that writes one.

A report is one HTML file with no external assets: styles are inline and every chart is an
inline SVG drawn by matplotlib, so the file can be mailed, archived or served as is.
Plugins build the charts (matplotlib is in their extra, never a core dependency) and hand
the SVG text to :class:`HtmlReport`::

    report = HtmlReport("Survey: Service 2026", subtitle="1,204 responses")
    section = report.section("Net Promoter Score", intro="0-10, promoters 9-10.")
    fig = new_figure(6, 3)
    fig.gca().bar(range(11), counts)
    section.figure(figure_svg(fig), caption="Distribution of answers", name="nps")
    section.table(["Group", "Share"], [["Promoters", "41.0%"], ...])
    html = report.render()

The page checks itself when a browser opens it: a small inline script counts the charts
whose SVG has a non-zero size and writes the count on ``<body data-figures-rendered>``
(``data-figures-total`` is set by the server), which the browser tests read.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#475569", "#ea580c")
"""Colours used for series, in order (colour-blind friendly enough to tell 4-5 apart)."""


def new_figure(width: float = 7.0, height: float = 3.5) -> Figure:
    """A matplotlib Figure (inches) in the report style, without pyplot's global state.

    Safe in a web request or a thread: nothing is registered with pyplot.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def style_axes(ax: Any) -> None:
    """Light grid, no top/right frame: the look every report chart shares."""
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def figure_svg(fig: Figure) -> str:
    """Render a matplotlib figure to inline SVG text (the ``<svg>`` element only).

    Text stays text (``svg.fonttype = none``): smaller files, searchable labels. Every
    text is drawn as written, never as mathtext: labels carry user data (names, question
    texts) where a ``$`` would otherwise be parsed, and fail the drawing when unbalanced.
    """
    import matplotlib
    from matplotlib.text import Text

    for text in fig.findobj(Text):  # titles, tick labels, legends, annotations...
        text.set_parse_math(False)
    buffer = io.StringIO()
    # ...and the tick labels matplotlib only creates while drawing.
    with matplotlib.rc_context({"svg.fonttype": "none", "text.parse_math": False}):
        # No RDF metadata block: a date in it would make every rendering differ.
        fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None,
                                                    "Format": None, "Type": None})
    text = buffer.getvalue()
    start = text.find("<svg")
    if start < 0:  # pragma: no cover - matplotlib always writes an <svg> root
        raise ValueError("matplotlib did not produce an SVG document")
    return text[start:]


def fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    """A table cell: numbers rounded, None/NaN as an em dash, percentages with a % sign."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return f"{value:,}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "\u2014"
        if percent:
            return f"{value * 100:.{max(digits - 1, 0)}f}%"
        return f"{value:,.{digits}f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


@dataclass
class _Block:
    html: str


@dataclass
class Section:
    """A titled part of a report; blocks render in the order they were added."""

    title: str
    intro: str | None = None
    blocks: list[_Block] = field(default_factory=list)
    figures: int = 0

    def paragraph(self, text: str) -> Section:
        self.blocks.append(_Block(f"<p>{html.escape(text)}</p>"))
        return self

    def note(self, text: str, level: str = "info") -> Section:
        """A highlighted remark; ``level`` is ``info`` or ``warning``."""
        css = "warning" if level == "warning" else "info"
        self.blocks.append(_Block(f'<p class="note {css}">{html.escape(text)}</p>'))
        return self

    def key_values(self, pairs: Iterable[tuple[str, Any]]) -> Section:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(fmt(v))}</td></tr>"
                       for k, v in pairs)
        self.blocks.append(_Block(f'<table class="kv">{rows}</table>'))
        return self

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              caption: str | None = None) -> Section:
        """A data table; cells go through :func:`fmt` unless they are already strings."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = []
        for row in rows:
            cells = []
            for cell in row:
                text = cell if isinstance(cell, str) else fmt(cell)
                numeric = not isinstance(cell, str) and cell is not None
                cls = ' class="num"' if numeric else ""
                cells.append(f"<td{cls}>{html.escape(text)}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(_Block(
            f'<div class="scroll"><table class="data">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"))
        return self

    def figure(self, svg: str, caption: str, name: str = "") -> Section:
        """An inline SVG chart (from :func:`figure_svg`) with a caption."""
        if not svg.lstrip().startswith("<svg"):
            raise ValueError("figure() takes the <svg> text made by figure_svg()")
        self.figures += 1
        label = html.escape(name or caption, quote=True)
        self.blocks.append(_Block(
            f'<figure class="chart" data-chart="{label}">{svg}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"))
        return self


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}
header{background:#1e293b;color:#f8fafc;padding:24px 40px}
header h1{margin:0 0 4px;font-size:1.6rem} header p{margin:0;color:#cbd5e1}
main{max-width:1100px;margin:0 auto;padding:16px 40px 48px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 24px;
margin:20px 0}
h2{font-size:1.2rem;margin:0 0 8px} nav a{margin-right:14px;color:#2563eb}
figure.chart{margin:16px 0} figure.chart svg{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#4b5563}
table{border-collapse:collapse;font-size:.85rem;margin:8px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0}
.scroll{overflow-x:auto} .note{padding:8px 12px;border-radius:6px}
.note.info{background:#eff6ff} .note.warning{background:#fef3c7}
footer{color:#6b7280;font-size:.8rem;text-align:center;padding:16px}
"""

# Counts charts that the browser laid out with a real size (read by the browser tests).
_SELF_CHECK = """
window.addEventListener('load', function () {
  var charts = document.querySelectorAll('figure.chart svg'), ok = 0;
  charts.forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 10 && box.height > 10) { ok += 1; }
  });
  document.body.setAttribute('data-figures-rendered', String(ok));
});
"""


class HtmlReport:
    """A one-file HTML report: header, table of contents, sections, footer."""

    def __init__(self, title: str, subtitle: str | None = None,
                 generated_at: dt.datetime | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self.generated_at = generated_at or dt.datetime.now(dt.UTC)
        self.sections: list[Section] = []

    def section(self, title: str, intro: str | None = None) -> Section:
        section = Section(title, intro)
        self.sections.append(section)
        return section

    @property
    def figure_count(self) -> int:
        return sum(s.figures for s in self.sections)

    def render(self) -> str:
        toc = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>'
                      for i, s in enumerate(self.sections, 1))
        parts = []
        for i, section in enumerate(self.sections, 1):
            intro = f"<p>{html.escape(section.intro)}</p>" if section.intro else ""
            blocks = "".join(b.html for b in section.blocks)
            parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>'
                         f"{intro}{blocks}</section>")
        subtitle = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        stamp = self.generated_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
            '</title><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style><script>{_SELF_CHECK}</script></head>"
            f'<body data-figures-total="{self.figure_count}" data-figures-rendered="0">'
            f"<header><h1>{html.escape(self.title)}</h1>{subtitle}</header>"
            f"<main><nav>{toc}</nav>{''.join(parts)}</main>"
            f"<footer>Generated by Rapport on {stamp}</footer></body></html>\n"
        )
