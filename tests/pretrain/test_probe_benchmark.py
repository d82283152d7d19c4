"""benchmarks/pretrain_probe.py end to end on a small MedMNIST-shaped archive (full and few-shot probes)."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from tests.helpers import save_tiny_encoder

ROOT = Path(__file__).resolve().parents[2]


def _archive(path: Path) -> Path:
    """Five classes told apart by brightness, so any encoder separates them somewhat."""
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", 60), ("val", 30), ("test", 30)):
        y = np.arange(n) % 5
        x = rng.integers(0, 60, (n, 28, 28, 3)) + 40 * y[:, None, None, None]
        parts[f"{split}_images"], parts[f"{split}_labels"] = x.astype(np.uint8), y[:, None].astype(np.uint8)
    np.savez(path, **parts)
    return path


def test_probe_benchmark_compares_with_random_twins(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pretrain_probe", ROOT / "benchmarks" / "pretrain_probe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    weights = save_tiny_encoder(tmp_path / "enc.safetensors", seed=5)
    work = tmp_path / "work"
    assert (
        bench.main(
            [
                "--weights",
                str(weights),
                "--npz",
                str(_archive(tmp_path / "m.npz")),
                "--work",
                str(work),
                "--retinamnist",
                str(tmp_path / "vfm"),
                "--seeds",
                "0",
                "1",
                "--shots",
                "1",
                "3",
                "--draws",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "random init, mean (sd)" in out and "Few-shot linear probe" in out and "pretrained - random" in out
    res = json.loads((work / "probe.json").read_text())
    assert set(res["results"]) == {"pretrained", "random init (seed 0)", "random init (seed 1)"}
    assert res["results"]["pretrained"]["test_auc"] > 0.6  # brightness classes are easy
    few = res["fewshot"]
    assert set(few) == {"1", "3"} and all(len(v["pretrained"]["draws"]) == 4 for v in few.values())
    # random twin seed 0 is an independent encoder; its draws use the same images but give other scores
    assert few["3"]["random init (seed 0)"]["draws"] != few["3"]["pretrained"]["draws"]
