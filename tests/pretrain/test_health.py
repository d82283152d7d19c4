"""Collapse indicators: known answers, the one warning line, health.json."""

import json
import logging
import math

import pytest
import torch

from visionfm.pretrain.health import (
    HealthThresholds,
    HealthWatch,
    effective_rank,
    entropy_ratio,
    feature_std,
    health_problems,
    summarize_health,
    write_health,
)


def test_feature_std_known_answers():
    assert feature_std(torch.ones(5, 8)) == pytest.approx(0.0, abs=1e-7)  # every image the same point
    # two orthogonal unit rows in 2-D: per-channel std 0.5, times sqrt(2)
    assert feature_std(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5 * math.sqrt(2))
    assert feature_std(torch.tensor([[2.0, 0.0], [0.0, 3.0]])) == pytest.approx(0.5 * math.sqrt(2))  # scale-free


def test_effective_rank_known_answers():
    assert effective_rank(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])) == pytest.approx(2.0)
    assert effective_rank(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)  # a line
    assert effective_rank(torch.full((6, 4), 3.0)) == 0.0  # a point
    x = torch.eye(4) - 0.25  # 4 centred corners of a simplex: 3 equal directions
    assert effective_rank(x) == pytest.approx(3.0, rel=1e-5)


def test_entropy_ratio_and_problems():
    assert entropy_ratio(math.log(64), 64) == pytest.approx(1.0)
    assert entropy_ratio(0.0, 64) == 0.0
    healthy = {"teacher_entropy_ratio": 0.5, "feature_std": 0.4, "effective_rank": 9.0}
    assert health_problems(healthy) == []
    bad = health_problems({"teacher_entropy_ratio": 0.97, "feature_std": 0.001, "effective_rank": 1.2})
    assert len(bad) == 3 and "uniform teacher" in bad[0] and "all images alike" in bad[1]
    assert health_problems({"feature_std": 0.5}) == []  # MAE rows have no teacher: not judged on it
    assert health_problems({"effective_rank": 2.5}, HealthThresholds(min_effective_rank=3)) != []


def test_watch_warns_once_on_logged_steps(caplog):
    watch = HealthWatch(log_every=2)
    bad = {"feature_std": torch.tensor(0.0), "effective_rank": torch.tensor(0.5)}
    with caplog.at_level(logging.WARNING, logger="visionfm.pretrain.health"):
        watch.after_step(1, 20, bad)  # step 2 of 20: within the first 20 %, a fresh model is not judged
        watch.after_step(4, 20, bad)  # step 5: not a logged step
        assert not caplog.records
        for step in range(5, 20):
            watch.after_step(step, 20, bad)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "possible collapse at step 6" in lines[0] and "effective rank 0.50" in lines[0]
    quiet = HealthWatch(log_every=1, main=False)  # other ranks under torchrun never report
    with caplog.at_level(logging.WARNING, logger="visionfm.pretrain.health"):
        quiet.after_step(0, 1, bad)
    assert len(caplog.records) == 1


def test_summary_and_health_json(tmp_path):
    rows = [
        {"step": 1, "loss": 1.0, "feature_std": 0.5, "effective_rank": 1.0, "teacher_entropy_ratio": 0.99},
        {"step": 5, "loss": 1.0, "feature_std": 0.5, "effective_rank": 6.0, "teacher_entropy_ratio": 0.6},
        {"step": 10, "loss": 0.9, "feature_std": 0.004, "effective_rank": 1.1, "teacher_entropy_ratio": 0.99},
        {"step": 10, "epoch": 0, "val/x": 1.0},
    ]
    s = summarize_health(rows)  # step 1 trips, but lies in the grace period (first 20 % of 10 steps)
    assert not s["healthy"] and s["n_tripped"] == 1 and s["tripped"][0]["step"] == 10
    assert s["indicators"]["feature_std"] == {"first": 0.5, "last": 0.004, "worst": 0.004}
    assert s["indicators"]["teacher_entropy_ratio"]["worst"] == 0.99
    assert summarize_health(rows[1:2])["healthy"]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = write_health(tmp_path)
    assert json.loads((tmp_path / "health.json").read_text()) == written
    assert written["thresholds"]["max_entropy_ratio"] == 0.95
