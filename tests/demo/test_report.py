"""The HTML report: escaped text and tables, embedded images with captions, anchors, timing."""
from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from visionfm.report import Report, Section


def test_report_sections_tables_images(tmp_path):
    png = tmp_path / "fundus-dr" / "preview.png"
    png.parent.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png)
    r = Report("demo <1>", {"machine": "2 CPUs"})
    r.add(Section("A & B", "x < y", [("metrics", [{"auc": 0.912345, "n": 3}, {"auc": 0.5, "extra": "z"}])],
                  [png, tmp_path / "missing.png"], seconds=1.26, anchor="stage-a"))
    r.add(Section("Empty"))
    html = r.write(tmp_path / "out" / "report.html").read_text()
    assert "<title>demo &lt;1&gt;</title>" in html and "<b>machine</b>: 2 CPUs" in html
    assert "<h2 id='stage-a'>A &amp; B</h2>" in html and "<p>x &lt; y</p>" in html and "<h2>Empty</h2>" in html
    assert "<th>auc</th><th>n</th><th>extra</th>" in html and "<td>0.9123</td>" in html
    assert html.count("<img") == 1 and "<figcaption>fundus-dr/preview.png</figcaption>" in html
    assert base64.b64encode(png.read_bytes()).decode() in html
    assert "<p class='t'>1.3 s</p>" in html and "<td>A &amp; B</td><td>1.3</td>" in html  # timing table
