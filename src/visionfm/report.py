"""A self-contained HTML report: a health check and a summary first, then sections of tables and captioned figures.

Used by the demo and the benchmark so every run leaves one file a person can open anywhere (images embedded as
base64, no scripts). Numbers are shown with three significant figures throughout (trailing zeros kept, so ``0.900``
and ``1.00`` read as measured values; very small values in scientific notation); numeric cells are right-aligned,
text left-aligned; figures sit in a responsive grid with a caption that says what they show.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

__all__ = ["Figure", "Report", "Section", "fmt_number"]

Figure = Union[Path, str, "tuple[Path | str, str]"]


@dataclass
class Section:
    """One part of a report.

    Attributes:
        title: heading.
        text: a paragraph of plain text (escaped).
        tables: (caption, rows) where rows are dicts with the same keys.
        images: figures: a PNG path, or (path, caption) where the caption says what the figure shows.
        seconds: wall time the section's work took.
        cpu_seconds: CPU time of this process during it (on a shared machine the fairer measure).
        anchor: the HTML id of the section's heading (e.g. the demo stage's name).
        summary: rows for the report's summary table: ``task``, ``metric``, ``value``, optional ``ci`` (lo, hi),
            ``random encoder`` (the baseline's score), ``expectation``, ``passed`` (bool or None), ``n``.
        health: rows for the report's health check: ``check``, ``value``, ``reference``, ``passed``, ``note``.
        skipped: the work did not run (the text says why); shown as "skipped", not as a time.
    """

    title: str
    text: str = ""
    tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = field(default_factory=list)
    images: list[Figure] = field(default_factory=list)
    seconds: float | None = None
    cpu_seconds: float | None = None
    anchor: str = ""
    summary: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False


def fmt_number(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant figures, trailing zeros kept (``0.900``, ``1.00``, ``123``, ``1.08e-04``)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v) or v == 0:
        return "0" if v == 0 else str(v)
    if abs(v) < 1e-3 or abs(v) >= 10 ** (digits + 3):
        return f"{v:.{digits - 1}e}"
    if abs(v) >= 10**digits:
        return f"{v:.0f}"
    return f"{v:#.{digits}g}".rstrip(".")


def _cell(v: Any) -> tuple[str, bool]:
    """(escaped text, is it a number) of one table value."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt_number(v), True
    if isinstance(v, bool):
        return ("yes" if v else "no"), False
    return html.escape("" if v is None else str(v)), False


def _table(caption: str, rows: Sequence[Mapping[str, Any]], cls: str = "") -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            text, num = _cell(r.get(c, ""))
            cells.append(f"<td class='num'>{text}</td>" if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f" class='{cls}'" if cls else ""
    return (
        f"<div class='tw'><table{attr}><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figure(item: Figure) -> str:
    """An embedded PNG with its caption (default: the file's folder and name)."""
    path, caption = item if isinstance(item, tuple) else (item, "")
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    caption = caption or (f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
    cap = html.escape(caption)
    return (
        f'<figure><a href="data:image/png;base64,{data}"><img src="data:image/png;base64,{data}" '
        f'alt="{cap}"></a><figcaption>{cap}</figcaption></figure>'
    )


def _status(passed: Any) -> str:
    if passed is None:
        return "<td class='na'>n/a</td>"
    return "<td class='ok'>passed</td>" if passed else "<td class='bad'>failed</td>"


def _summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Task | metric | value [95% CI] | random encoder | expectation | result | n."""
    if not rows:
        return ""
    out = [
        "<div class='tw'><table class='summary'><caption>Summary: every task, its test metric with 95% CI, what "
        "a random encoder of the same shape scores, and whether the expectation was met</caption><thead><tr>"
        "<th>task</th><th>metric</th><th>value [95% CI]</th><th>random encoder</th><th>expectation</th>"
        "<th>result</th><th>n</th></tr></thead><tbody>"
    ]
    for r in rows:
        ci = r.get("ci")
        value = fmt_number(r["value"]) if isinstance(r.get("value"), (int, float)) else html.escape(str(r.get("value")))
        if ci and not any(isinstance(c, float) and math.isnan(c) for c in ci):
            value += f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
        base = r.get("random encoder")
        numeric = isinstance(base, (int, float))
        base_cls = " class='num'" if numeric else ""  # text (e.g. "not run (...)") wraps; numbers stay on one line
        base_text = fmt_number(base) if numeric else html.escape(str(base or "not measured"))
        out.append(
            f"<tr><td>{html.escape(str(r['task']))}</td><td>{html.escape(str(r['metric']))}</td>"
            f"<td class='num'>{value}</td><td{base_cls}>{base_text}</td>"
            f"<td>{html.escape(str(r.get('expectation', '')))}</td>{_status(r.get('passed'))}"
            f"<td>{html.escape(str(r.get('n', '')))}</td></tr>"
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def _health_block(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return (
            "<h2 id='health'>Health check</h2><p class='bad'>No health check ran (the probe stage was not part "
            "of this run): the numbers below are not checked against a collapsed encoder.</p>"
        )
    ok = all(r.get("passed") is not False for r in rows)
    verdict = (
        "<p class='ok'>Healthy: the encoder's features differ between images and span many directions.</p>"
        if ok
        else "<p class='bad'>Collapse suspected: read every number below as that of a broken encoder.</p>"
    )
    body = "".join(
        f"<tr><td>{html.escape(str(r['check']))}</td><td class='num'>{_cell(r.get('value', ''))[0]}</td>"
        f"<td>{html.escape(str(r.get('reference', '')))}</td>{_status(r.get('passed'))}"
        f"<td>{html.escape(str(r.get('note', '') or ''))}</td></tr>"
        for r in rows
    )
    return (
        f"<h2 id='health'>Health check</h2>{verdict}<div class='tw'><table><thead><tr><th>check</th>"
        f"<th>value</th><th>healthy when</th><th>result</th><th>note</th></tr></thead><tbody>{body}</tbody>"
        f"</table></div>"
    )


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222;
line-height:1.45}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.tw{overflow-x:auto}table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}caption{font-weight:bold;text-align:left;padding-bottom:.3em}.ok{color:#17692c;font-weight:bold}
.bad{color:#b00020;font-weight:bold}.na{color:#777}.grid{display:grid;gap:12px;
grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));align-items:start}figure{margin:0;
border:1px solid #e3e3e3;padding:6px;background:#fafafa}
figure img{width:100%;height:auto;max-height:460px;object-fit:contain;display:block}
figcaption{font-size:90%;color:#444;margin-top:4px}.t{color:#666;font-size:90%}.skip{color:#777;font-style:italic}"""


class Report:
    """Collects sections and writes them as one HTML file: health, summary, sections, timing.

    Args:
        title: page title.
        meta: name -> value lines shown under the title (options, machine).
        health_check: the page must open with a health check; without any health rows it says none ran.
    """

    def __init__(self, title: str, meta: Mapping[str, Any] | None = None, health_check: bool = False) -> None:
        self.title, self.health_check = title, health_check
        self.meta = dict(meta or {})
        self.sections: list[Section] = []
        self.started = time.time()

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def _section(self, s: Section) -> list[str]:
        anchor = f" id='{html.escape(s.anchor, quote=True)}'" if s.anchor else ""
        parts = [f"<h2{anchor}>{html.escape(s.title)}</h2>"]
        if s.skipped:
            parts.append("<p class='skip'>skipped</p>")
        elif s.seconds is not None:
            cpu = f" (CPU {s.cpu_seconds:.1f} s)" if s.cpu_seconds is not None else ""
            parts.append(f"<p class='t'>{s.seconds:.1f} s{cpu}</p>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        parts += [_table(c, rows) for c, rows in s.tables]
        figures = [_figure(p) for p in s.images if Path(p[0] if isinstance(p, tuple) else p).is_file()]
        if figures:
            parts.append("<div class='grid'>" + "".join(figures) + "</div>")
        return parts

    def html(self) -> str:
        """The whole page."""
        parts = [
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>"
        ]
        parts += [f"<p class='t'><b>{html.escape(k)}</b>: {_cell(v)[0]}</p>" for k, v in self.meta.items()]
        health = [r for s in self.sections for r in s.health]
        summary = [r for s in self.sections for r in s.summary]
        if health or self.health_check:
            parts.append(_health_block(health))
        if summary:
            parts.append("<h2 id='summary'>Summary</h2>" + _summary_table(summary))
        for s in self.sections:
            parts += self._section(s)
        timing = [
            {
                "section": s.title,
                "wall s": "skipped" if s.skipped else float(s.seconds or 0.0),
                "CPU s": "" if s.skipped or s.cpu_seconds is None else float(s.cpu_seconds),
            }
            for s in self.sections
            if s.seconds is not None or s.skipped
        ]
        parts.append("<h2 id='timing'>Timing</h2>" + _table(f"total {time.time() - self.started:.0f} s wall", timing))
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, path: str | Path) -> Path:
        """Write the page atomically; returns its path."""
        from .fileio import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return path
