"""A self-contained HTML report: sections of metric tables, images (embedded as base64) and timings.

Used by the demo and the benchmark so every run leaves one file a person can open anywhere.
"""
from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["Section", "Report"]


@dataclass
class Section:
    """One part of a report.

    Attributes:
        title: heading.
        text: a paragraph of plain text (escaped).
        tables: (caption, rows) where rows are dicts with the same keys.
        images: PNG paths embedded in the page.
        seconds: wall time the section's work took.
        cpu_seconds: CPU time of this process during it (on a shared machine the fairer measure).
        anchor: the HTML id of the section's heading (e.g. the demo stage's name).
    """

    title: str
    text: str = ""
    tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    seconds: float | None = None
    cpu_seconds: float | None = None
    anchor: str = ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(caption: str, rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    """An embedded PNG captioned by its folder and file name (``fundus-dr/preview.png``)."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
            f"<figcaption>{name}</figcaption></figure>")


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
caption{font-weight:bold;text-align:left}figure{display:inline-block;margin:4px}img{max-width:520px}
.t{color:#666;font-size:90%}"""


class Report:
    """Collects sections and writes them as one HTML file.

    Args:
        title: page title.
        meta: name -> value lines shown under the title (options, machine).
    """

    def __init__(self, title: str, meta: Mapping[str, Any] | None = None) -> None:
        self.title = title
        self.meta = dict(meta or {})
        self.sections: list[Section] = []
        self.started = time.time()

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                 f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        parts += [f"<p class='t'><b>{html.escape(k)}</b>: {_fmt(v)}</p>" for k, v in self.meta.items()]
        timing = [{"section": s.title, "seconds": round(s.seconds, 1),
                   **({"CPU seconds": round(s.cpu_seconds, 1)} if s.cpu_seconds is not None else {})}
                  for s in self.sections if s.seconds]
        for s in self.sections:
            anchor = f" id='{html.escape(s.anchor, quote=True)}'" if s.anchor else ""
            parts.append(f"<h2{anchor}>{html.escape(s.title)}</h2>")
            if s.seconds is not None:
                cpu = f" (CPU {s.cpu_seconds:.1f} s)" if s.cpu_seconds is not None else ""
                parts.append(f"<p class='t'>{s.seconds:.1f} s{cpu}</p>")
            if s.text:
                parts.append(f"<p>{html.escape(s.text)}</p>")
            parts += [_table(c, rows) for c, rows in s.tables]
            parts += [_image(p) for p in s.images if Path(p).is_file()]
        parts.append("<h2>Timing</h2>" + _table(f"total {time.time() - self.started:.0f} s", timing))
        parts.append("</body></html>")
        path.write_text("\n".join(parts))
        return path
