"""Visual Turing test: session building, the HTTP server, scoring against known answers, and the real page in
headless Chromium."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from visionfm.cli import main
from visionfm.synth.turing import build_session, make_turing_server
from visionfm.synth.turing_score import format_scores, read_answers, score_answers


@pytest.fixture
def syn_folder(tmp_path):
    root = tmp_path / "synthetic"
    root.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"s{i}.png")
    return root


@pytest.fixture
def server(disc_folder, syn_folder, tmp_path):
    srv = make_turing_server(disc_folder, syn_folder, "dr_a", tmp_path / "answers.jsonl", port=0, display_size=64)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _call(url, body=None):
    req = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_session_is_balanced_and_shuffled_per_reader(disc_folder, syn_folder):
    a = build_session(disc_folder, syn_folder, "reader-a", seed=1)
    b = build_session(disc_folder, syn_folder, "reader-b", seed=1)
    assert len(a) == 6 and sum(it.truth == "real" for it in a) == 3
    assert {it.id for it in a} == {it.id for it in b}  # same images for the panel
    assert [it.id for it in a] != [it.id for it in b]  # in a different order
    assert all(str(it.path) not in it.id for it in a)
    with pytest.raises(ValueError, match="per set"):
        build_session(disc_folder, syn_folder, "x", n=4)
    with pytest.raises(ValueError, match="reader"):
        build_session(disc_folder, syn_folder, " ")


def test_server_records_answers_once_and_resumes(server, tmp_path, disc_folder, syn_folder):
    code, page = _call(server.url)
    assert code == 200 and b"btn-synthetic" in page
    state = json.loads(_call(server.url + "api/state")[1])
    assert (state["total"], state["answered"], state["done"]) == (6, 0, False)
    code, png = _call(server.url + f"image/{state['next']}.png")
    assert code == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    code, body = _call(server.url + "api/answer", {"id": state["next"], "answer": "real"})
    assert code == 200 and json.loads(body)["answered"] == 1
    assert _call(server.url + "api/answer", {"id": state["next"], "answer": "synthetic"})[0] == 409
    assert _call(server.url + "api/answer", {"id": "nope", "answer": "real"})[0] == 404
    assert _call(server.url + "api/answer", {"id": json.loads(body)["next"], "answer": "maybe"})[0] == 400
    assert _call(server.url + "image/nope.png")[0] == 404
    recs = read_answers([tmp_path / "answers.jsonl"])
    assert len(recs) == 1 and recs[0]["answer"] == "real" and recs[0]["reader"] == "dr_a"
    again = make_turing_server(disc_folder, syn_folder, "dr_a", tmp_path / "answers.jsonl", port=0)
    assert again.state()["answered"] == 1  # a restarted session skips what was answered
    again.server_close()


def _write(path, reader, pairs):
    with open(path, "w") as f:
        for i, (truth, answer) in enumerate(pairs):
            f.write(json.dumps({"reader": reader, "item": f"i{i}", "truth": truth, "answer": answer}) + "\n")


def test_scoring_known_answers(tmp_path):
    r, s = "real", "synthetic"
    _write(tmp_path / "a.jsonl", "A", [(r, r), (r, r), (s, s), (s, r)])  # 3/4; real 2/2, synthetic 1/2
    _write(tmp_path / "b.jsonl", "B", [(r, s), (r, s), (s, s), (s, r)])  # 1/4; real 0/2, synthetic 1/2
    panel = score_answers(read_answers([tmp_path / "a.jsonl", tmp_path / "b.jsonl"]))
    a, b = panel.readers
    assert (a.reader, a.n, a.correct, a.accuracy, a.real_recognised, a.synthetic_detected) == ("A", 4, 3, 0.75, 1, 0.5)
    assert (b.correct, b.accuracy, b.real_recognised) == (1, 0.25, 0)
    assert a.p_value == pytest.approx(0.625)  # P(X >= 3) + P(X <= 1) for Bin(4, 1/2) = 10/16
    assert panel.mean_accuracy == pytest.approx(0.5)
    assert panel.sd_accuracy == pytest.approx(np.std([0.75, 0.25], ddof=1))  # 0.35355
    assert "50.0% +- 35.4%" in format_scores(panel)


def test_scoring_duplicates_and_bad_lines(tmp_path):
    f = tmp_path / "dup.jsonl"
    f.write_text(
        json.dumps({"reader": "A", "item": "x", "truth": "real", "answer": "real"})
        + "\n"
        + json.dumps({"reader": "A", "item": "x", "truth": "real", "answer": "synthetic"})
        + "\n"
    )
    panel = score_answers(read_answers([f]))
    assert (panel.readers[0].n, panel.readers[0].accuracy, panel.sd_accuracy) == (1, 1.0, 0.0)
    f.write_text('{"reader": "A", "item": "x", "truth": "real"}\n')
    with pytest.raises(ValueError, match="line 1: missing"):
        read_answers([f])
    f.write_text('{"reader": "A", "item": "x", "truth": "fake", "answer": "real"}\n')
    with pytest.raises(ValueError, match="fake"):
        read_answers([f])


def test_cli_turing_score(tmp_path, capsys):
    _write(tmp_path / "a.jsonl", "A", [("real", "real"), ("synthetic", "real")])
    assert (
        main(["synth", "turing-score", "--answers", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "s.json")])
        == 0
    )
    assert "panel (1 readers): accuracy 50.0%" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["mean_accuracy"] == 0.5
    assert main(["synth", "turing-score", "--answers", str(tmp_path / "none.jsonl")]) == 2


def test_page_in_headless_chromium(browser, server, tmp_path):
    """A reader clicks (and types) through the whole session in a real browser; every answer lands in the file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def element(id_):
        return browser.find_element(By.ID, id_)

    browser.get(server.url)
    assert browser.title == "Visual Turing test" and element("reader").text == "dr_a"
    wait = WebDriverWait(browser, 20)
    shown = []
    for i in range(6):
        wait.until(
            lambda b, i=i: element("progress").text.startswith(f"{i + 1} / 6") and element("btn-real").is_enabled()
        )
        img = element("image")
        assert browser.execute_script("return arguments[0].naturalWidth;", img) == 64  # every image at one size
        shown.append(img.get_attribute("src").rsplit("/", 1)[-1].removesuffix(".png"))
        if i % 2:
            element("btn-real").click()
        else:  # the keyboard shortcut, typed as a real key press
            browser.find_element(By.TAG_NAME, "body").send_keys("s")
    wait.until(lambda b: element("done").is_displayed())
    assert not element("image").is_displayed() and element("progress").text == "6 / 6 (done)"
    recs = read_answers([tmp_path / "answers.jsonl"])
    assert [r["answer"] for r in recs] == ["synthetic", "real"] * 3
    assert [r["item"] for r in recs] == shown  # each answer is recorded for the image that was on screen
    assert len(set(shown)) == 6 and sum(r["truth"] == "real" for r in recs) == 3
    assert all(r["reader"] == "dr_a" and r["correct"] == (r["truth"] == r["answer"]) for r in recs)
    assert server.state()["done"]
    browser.refresh()  # coming back after the end shows the end, not a seventh image
    wait.until(lambda b: element("done").is_displayed())
    assert len(read_answers([tmp_path / "answers.jsonl"])) == 6


def test_cli_turing_serves_until_done(disc_folder, syn_folder, tmp_path, capsys):
    """``visionfm synth turing --exit-when-done`` serves one reader and returns once every image is answered."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    answers = tmp_path / "cli.jsonl"
    result = {}
    t = threading.Thread(
        target=lambda: result.update(
            rc=main(
                [
                    "synth",
                    "turing",
                    "--real",
                    str(disc_folder),
                    "--synthetic",
                    str(syn_folder),
                    "--reader",
                    "dr_b",
                    "--answers",
                    str(answers),
                    "--port",
                    str(port),
                    "--n",
                    "2",
                    "--exit-when-done",
                ]
            )
        )
    )
    t.start()
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):  # wait for the server to bind
        try:
            state = json.loads(_call(url + "api/state")[1])
            break
        except urllib.error.URLError:
            time.sleep(0.05)
    while not state["done"]:
        state = json.loads(_call(url + "api/answer", {"id": state["next"], "answer": "synthetic"})[1])
    t.join(timeout=20)
    assert not t.is_alive() and result["rc"] == 0
    assert "dr_b: 4 answers" in capsys.readouterr().out
    assert len(read_answers([answers])) == 4
