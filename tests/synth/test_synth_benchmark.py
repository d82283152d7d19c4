"""The benchmark hook in its quick form, on the real RetinaMNIST archive."""

from __future__ import annotations

import pytest

from tests.helpers import DATA, require
from visionfm.synth.benchmark import benchmark


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    rows = benchmark(require(DATA / "retinamnist").parent, tmp_path, None, quick=True)
    assert [r["metric"] for r in rows] == [
        "frechet_distance",
        "precision",
        "recall",
        "copies_features",
        "copies_pixels",
    ]
    assert set(rows[0]) == {"task", "dataset", "method", "encoder", "metric", "value", "published", "notes"}
    fd, p, r, cf, cp = (row["value"] for row in rows)
    assert fd > 0 and 0 <= p <= 1 and 0 <= r <= 1 and cp == 0.0  # 30 steps of training copy nothing
    assert "32 samples vs 400 held-out" in rows[0]["notes"]
    with pytest.raises(FileNotFoundError, match="retinamnist"):
        benchmark(tmp_path / "nowhere", tmp_path / "o", None, quick=True)
