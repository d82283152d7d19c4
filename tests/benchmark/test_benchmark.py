"""The benchmark aggregator: suites -> one markdown + JSON table; bad options are clear errors."""

import json

import pytest

from visionfm.benchmark import SUITES, BenchmarkConfig, rows_to_markdown, run_benchmark
from visionfm.cli import main


@pytest.fixture(scope="module", autouse=True)
def fake_suite():
    if "fake" not in SUITES:
        SUITES.add("fake", "tests.benchmark.fake_suite")


def test_rows_written_as_markdown_and_json(tmp_path):
    (tmp_path / "data").mkdir()
    md, js = run_benchmark(BenchmarkConfig(str(tmp_path / "data"), str(tmp_path / "out"), quick=True, suites=["fake"]))
    text = md.read_text()
    assert "| t | data | m | None | auc | 0.7500 | x / y |" in text and "n/a" in text
    res = json.loads(js.read_text())
    assert [r["value"] for r in res["rows"]] == [0.75, None] and res["rows"][0]["suite"] == "fake"
    assert res["config"]["quick"] is True and "fake" in res["seconds"]


def test_markdown_columns_in_order():
    head = rows_to_markdown([]).splitlines()[0]
    assert head.startswith("| task | dataset | method | encoder | metric | value | published")


def test_cli_errors_name_the_argument(tmp_path, capsys):
    assert main(["benchmark", "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert main(["benchmark", "--data", str(tmp_path / "d"), "--weights", str(tmp_path / "w.pth")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_cli_runs_a_suite(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["benchmark", "--data", str(tmp_path / "d"), "--output", str(tmp_path / "o"), "--suites", "fake"]) == 0
    assert "0.8000" in capsys.readouterr().out
