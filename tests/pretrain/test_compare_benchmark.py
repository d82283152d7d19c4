"""benchmarks/pretrain_compare.py end to end at test size: calibration, budgeted iBOT and MAE runs on real fundus
images, RetinaMNIST-shaped probes, the ORIGA glaucoma CV probe, the paired table and its JSON; then reuse."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DATA, require

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data=[{}]",
    "arch=vit_test",
    "global_size=32",
    "load_size=null",
    "out_dim=128",
    "patch_out_dim=128",
    "head_hidden_dim=64",
    "head_bottleneck_dim=32",
    "batch_size=8",
    "decoder_embed_dim=32",
    "decoder_depth=1",
    "decoder_num_heads=2",
    "log_every=1",
    "checkpoint_every=0",
]


def _bench():
    spec = importlib.util.spec_from_file_location("pretrain_compare", ROOT / "benchmarks" / "pretrain_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _archive(path: Path) -> Path:
    """A MedMNIST-shaped archive: five classes told apart by brightness."""
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        y = np.arange(n) % 5
        x = rng.integers(0, 60, (n, 28, 28, 3)) + 40 * y[:, None, None, None]
        parts[f"{split}_images"], parts[f"{split}_labels"] = x.astype(np.uint8), y[:, None].astype(np.uint8)
    np.savez(path, **parts)
    return path


def test_compare_benchmark_tiny_end_to_end(retina_folder, tmp_path, capsys):
    origa = require(DATA / "ORIGA-subset")
    bench, work = _bench(), tmp_path / "work"
    args = [
        "--set",
        *[s.format(retina_folder) for s in TINY],
        "--budget-cpu-s",
        "1e-6",
        "--calib-steps",
        "1",
        "2",
        "--seeds",
        "0",
        "--work",
        str(work),
        "--npz",
        str(_archive(tmp_path / "m.npz")),
        "--origa",
        str(origa),
        "--retinamnist",
        str(tmp_path / "vfm"),
        "--shots",
        "1",
        "2",
        "--draws",
        "3",
        "--cv-repeats",
        "2",
    ]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "budget: ibot" in out and "MAE - iBOT, paired by seed" in out and "paired within the seed" in out
    res = json.loads((work / "compare.json").read_text())
    assert res["steps"] == {"ibot": 1, "mae": 1} and res["seeds"] == [0]
    assert all(res["calibration"][m]["cpu_s_per_step"] > 0 for m in ("ibot", "mae"))
    metrics = [r["metric"] for r in res["rows"]]
    assert metrics == [
        "RetinaMNIST full probe, test AUC",
        "RetinaMNIST full probe, test ACC",
        "RetinaMNIST 1-shot, test AUC",
        "RetinaMNIST 2-shot, test AUC",
        "ORIGA glaucoma (whole image), CV AUROC",
        "ORIGA glaucoma (disc crop), CV AUROC",
    ]
    for row in res["rows"]:
        assert {len(row[m]) for m in ("ibot", "mae", "random")} == {1}
        assert all(0.0 <= v <= 1.0 for m in ("ibot", "mae", "random") for v in row[m])
    assert set(res["rows"][2]["within_seed"]) == {"0"} and res["rows"][0]["within_seed"] == {}
    glaucoma = res["results"]["mae"]["0"]["glaucoma"]
    assert set(glaucoma) == {"whole", "disc"} and all(len(v) == 2 for v in glaucoma.values())
    assert len(res["results"]["ibot"]["0"]["fewshot"]["2"]["draws"]) == 3
    for m in ("ibot", "mae"):
        run = res["runs"]["0"][m]
        assert run["steps"] == 1 and run["cpu_s"] > 0 and Path(run["encoder"]).is_file()
    table = [line for line in out.splitlines() if line.startswith("| ORIGA glaucoma (disc crop)")]
    assert len(table) == 2 and table[0].count("|") == 8  # metric, iBOT s0, mean, MAE s0, mean, random, difference
    # a second call (report only) reuses every run and probe: nothing is retrained
    stamp = (work / "runs" / "mae-s0" / "encoder.safetensors").stat().st_mtime_ns
    assert bench.main([*args, "--report", "--steps", "1", "1"]) == 0  # the same steps given, not calibrated
    assert (work / "runs" / "mae-s0" / "encoder.safetensors").stat().st_mtime_ns == stamp
    again = json.loads((work / "compare.json").read_text())
    assert again["rows"] == res["rows"] and again["calibration"] is None


def test_compare_benchmark_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--set", "arch"])
    assert exc.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--npz", str(_archive(tmp_path / "m.npz")), "--origa", "/nonexistent/origa"])
    assert exc.value.code == 2 and "--origa: /nonexistent/origa/manifest.csv not found" in capsys.readouterr().err
