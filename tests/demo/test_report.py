"""The HTML report: escaped text and tables, numbers with consistent significant figures, captioned figures in a
grid, a health check and a summary first, skipped sections, anchors, timing."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from visionfm.report import Report, Section, fmt_number


@pytest.mark.parametrize(
    "value,text",
    [
        (1.0, "1.00"),
        (0.2, "0.200"),
        (0.09957, "0.0996"),
        (0.0001079, "1.08e-04"),
        (0.912345, "0.912"),
        (123.456, "123"),
        (12345.6, "12346"),
        (3, "3"),
        (-0.5, "-0.500"),
        (0.0, "0"),
        (float("nan"), "n/a"),
        (True, "yes"),
    ],
)
def test_fmt_number_known_answers(value, text):
    assert fmt_number(value) == text


def _png(path, shape=(4, 4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return path


def test_report_sections_tables_images(tmp_path):
    png = _png(tmp_path / "fundus-dr" / "preview.png")
    r = Report("demo <1>", {"machine": "2 CPUs"})
    r.add(
        Section(
            "A & B",
            "x < y",
            [("metrics", [{"auc": 0.912345, "n": 3}, {"auc": 0.5, "extra": "z"}])],
            [png, tmp_path / "missing.png", (png, "what the <figure> shows")],
            seconds=1.26,
            anchor="stage-a",
        )
    )
    r.add(Section("Empty"))
    html = r.write(tmp_path / "out" / "report.html").read_text()
    assert "<title>demo &lt;1&gt;</title>" in html and "<b>machine</b>: 2 CPUs" in html
    assert "<h2 id='stage-a'>A &amp; B</h2>" in html and "<p>x &lt; y</p>" in html and "<h2>Empty</h2>" in html
    assert "<th>auc</th><th>n</th><th>extra</th>" in html and "<td class='num'>0.912</td>" in html
    assert "<td class='num'>0.500</td>" in html and "<td>z</td>" in html  # numbers right, text left
    assert html.count("<img") == 2 and "<figcaption>fundus-dr/preview.png</figcaption>" in html
    assert "<figcaption>what the &lt;figure&gt; shows</figcaption>" in html and "<div class='grid'>" in html
    assert base64.b64encode(png.read_bytes()).decode() in html
    assert "<p class='t'>1.3 s</p>" in html and "<td>A &amp; B</td><td class='num'>1.26</td>" in html
    assert "id='health'" not in html and "id='summary'" not in html  # no health rows asked for, no summary rows


def test_health_and_summary_come_first_and_skipped_says_so(tmp_path):
    r = Report("demo", health_check=True)
    r.add(Section("Phantoms", "made", seconds=1.0))
    r.add(
        Section(
            "Probe",
            "probed",
            seconds=2.0,
            summary=[
                {
                    "task": "fundus-dr",
                    "metric": "AUROC",
                    "value": 0.9512,
                    "ci": (0.9, 0.99),
                    "random encoder": 0.61,
                    "expectation": "beats random",
                    "passed": True,
                    "n": "24 test; per class 5/5/5/5/4",
                },
                {
                    "task": "vessels",
                    "metric": "Dice",
                    "value": 0.7,
                    "random encoder": "not run",
                    "expectation": ">= 0.8",
                    "passed": False,
                    "n": "pixels",
                },
            ],
            health=[{"check": "feature spread", "value": 0.42, "reference": ">= 0.01", "passed": True}],
        )
    )
    r.add(Section("Real data", "Skipped: no --data", skipped=True))
    html = r.write(tmp_path / "report.html").read_text()
    assert html.index("id='health'") < html.index("id='summary'") < html.index("<h2>Phantoms</h2>")
    assert "Healthy" in html and "0.951 [0.900, 0.990]" in html and "<td class='num'>0.610</td>" in html
    assert html.count("<td class='ok'>passed</td>") == 2 and "<td class='bad'>failed</td>" in html
    assert "per class 5/5/5/5/4" in html
    assert "<p class='skip'>skipped</p>" in html and "<td>Real data</td><td>skipped</td>" in html
    bad = Report("demo", health_check=True)
    bad.add(Section("Probe", health=[{"check": "spread", "value": 0.0, "reference": ">= 0.01", "passed": False}]))
    assert "Collapse suspected" in bad.html()
    assert "No health check ran" in Report("demo", health_check=True).html()


def test_report_renders_in_headless_chromium(tmp_path, browser):
    """The page lays out in a real browser: nothing wider than the window, figures in a grid, captions visible.
    The screenshot is kept (``report.png`` beside the page) for a person to look at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for i, title in enumerate(["attention evolution during pretraining", "confusion matrix", "loss"]):
        fig, ax = plt.subplots(figsize=(6 + i, 3))
        ax.plot(np.arange(10), np.arange(10) ** (i + 1))
        ax.set_title(title)
        path = tmp_path / f"fig{i}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        figs.append((path, f"figure {i}: {title}"))
    r = Report("VisionFM demo", {"machine": "2 CPUs"}, health_check=True)
    r.add(
        Section(
            "Probe",
            "a long paragraph " * 40,
            [
                (
                    "linear probes",
                    [
                        {
                            "task": f"task {i}",
                            "metric": "AUROC (macro)",
                            "demo encoder": 0.9 + i / 100,
                            "95% CI": "[0.8, 1.0]",
                            "random encoder": 0.5,
                            "test images": "24 test; per class 5/5/5/5/4",
                        }
                        for i in range(4)
                    ],
                )
            ],
            figs,
            seconds=3.0,
            summary=[
                {
                    "task": "fundus-dr",
                    "metric": "AUROC",
                    "value": 0.95,
                    "ci": (0.9, 0.99),
                    "random encoder": 0.6,
                    "expectation": "beats random",
                    "passed": True,
                    "n": "24",
                }
            ],
            health=[{"check": "spread", "value": 0.4, "reference": ">= 0.01", "passed": True}],
        )
    )
    page = r.write(tmp_path / "report.html")
    browser.set_window_size(1000, 900)
    browser.get(page.as_uri())
    assert browser.title == "VisionFM demo"
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 1000, f"the page is {width} px wide in a 1000 px window"
    imgs = browser.find_elements("css selector", "figure img")
    assert len(imgs) == 3 and all(0 < img.size["width"] <= 1000 for img in imgs)
    tops = sorted({img.location["y"] for img in imgs})
    assert len(tops) < 3  # a grid: several figures share a row instead of one long column
    assert browser.find_element("css selector", "table.summary").is_displayed()
    assert (
        browser.find_element("css selector", "#health").location["y"]
        < browser.find_element("css selector", "#summary").location["y"]
    )
    browser.set_window_size(420, 900)  # a phone: still no page-wide horizontal scrolling
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 420 + 1
    browser.set_window_size(1000, 2400)
    assert browser.save_screenshot(str(tmp_path / "report.png"))
