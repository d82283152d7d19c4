"""A suite module for the aggregator tests: two rows, one with an undefined (NaN) metric."""

from pathlib import Path


def benchmark(data_root: Path, out: Path, weights, quick: bool) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        {
            "task": "t",
            "dataset": data_root.name,
            "method": "m",
            "encoder": str(weights),
            "metric": "auc",
            "value": 0.75 if quick else 0.8,
            "published": "x | y",
            "notes": "",
        },
        {"task": "t", "dataset": "d", "method": "m", "encoder": "", "metric": "ap", "value": float("nan")},
    ]
