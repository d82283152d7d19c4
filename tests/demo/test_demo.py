"""The README's main job end to end in fast mode: every stage runs and the one HTML report holds each section."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from visionfm.cli import main
from visionfm.demo import DEMO_STAGES, DemoConfig, run_demo


def _sections(report: str) -> dict[str, str]:
    """Stage name -> the HTML of its section (from its heading to the next one); health, summary and timing apart."""
    parts = re.split(r"(?=<h2)", report)
    out = {}
    for part in parts:
        m = re.match(r"<h2 id='([^']+)'>", part)
        if m and m.group(1) not in ("health", "summary", "timing"):
            out[m.group(1)] = part
    return out


def test_demo_fast_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VISIONFM_DATA", raising=False)
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--fast", "--output", str(out), "--device", "cpu", "--heartbeat", "10"]) == 0
    seconds = time.perf_counter() - t0
    report_path = (out / "report.html").resolve()
    assert f"report: {report_path}" in capsys.readouterr().out
    report = report_path.read_text()
    sections = _sections(report)
    assert list(sections) == DEMO_STAGES.names()  # every stage, in order
    for name, html in sections.items():
        if name != "real-data":  # the others are timed and show what they did: tables and/or figures
            assert re.search(r"<p class='t'>[\d.]+ s \(CPU [\d.]+ s\)</p>", html), name
            assert "<table" in html or "data:image/png" in html, name
    assert "<p class='skip'>skipped</p>" in sections["real-data"]  # no --data given
    assert "<h2 id='timing'>Timing</h2>" in report and "CPUs" in report
    # the report opens with the health check and the summary (every probed task against a random encoder)
    assert report.index("id='health'") < report.index("id='summary'") < report.index("id='phantoms'")
    summary = report[report.index("id='summary'") : report.index("id='phantoms'")]
    for task in ("fundus-dr", "oct-dme", "fundus-multilabel", "glaucoma-forecast", "fundus-vessels", "precision"):
        assert task in summary, task
    assert "per class" in summary  # n beside every AUROC
    assert (out / "encoder.safetensors").is_file()  # the README quick start's encoder
    # the encoder was pretrained briefly on the phantoms, and its checkpoints drew the attention evolution
    assert (out / "explain" / "attention_evolution.png").is_file()
    assert sections["explain"].count("data:image/png") >= 2
    saved = yaml.safe_load((out / "demo.yaml").read_text())
    assert saved["fast"] is True and saved["device"] == "cpu"
    print(f"fast demo: {seconds:.0f} s")


def test_demo_some_stages_with_given_weights(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.delenv("VISIONFM_DATA", raising=False)
    cfg = DemoConfig(
        output=str(tmp_path),
        fast=True,
        device="cpu",
        weights=str(tiny_weights),
        stages=["phantoms", "encoder", "explain"],
        heartbeat=0,
    )
    report = run_demo(cfg).read_text()
    assert list(_sections(report)) == ["phantoms", "encoder", "explain"]
    assert "Loaded" in _sections(report)["encoder"]
    assert not (tmp_path / "explain" / "attention_evolution.png").exists()  # no pretraining run to draw


def test_demo_errors(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--fast",
                "--output",
                str(tmp_path),
                "--weights",
                str(tmp_path / "nope.pth"),
                "--stages",
                "phantoms",
                "encoder",
                "--heartbeat",
                "0",
            ]
        )
        == 2
    )
    assert "nope.pth" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stages: 'nope' is not one of"):
        run_demo(DemoConfig(output=str(tmp_path / "x"), stages=["phantoms", "nope"]))
    assert not (tmp_path / "x").exists()  # checked before any work
    with pytest.raises(ValueError, match="needs an encoder"):
        run_demo(DemoConfig(output=str(tmp_path / "y"), fast=True, stages=["phantoms", "explain"], heartbeat=0))
