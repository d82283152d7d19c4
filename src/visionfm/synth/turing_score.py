"""Scoring visual Turing tests: each reader's accuracy and the panel mean +- sd (50% = indistinguishable)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PanelScore", "ReaderScore", "format_scores", "read_answers", "score_answers", "score_files"]

log = logging.getLogger(__name__)
_REQUIRED = ("reader", "item", "truth", "answer")


@dataclass
class ReaderScore:
    """One reader's result.

    Attributes:
        n: answered images.
        correct: right answers.
        accuracy: correct / n.
        real_recognised: share of real images called real (specificity).
        synthetic_detected: share of synthetic images called synthetic (sensitivity).
        p_value: two-sided exact binomial test of accuracy = 50%.
    """

    reader: str
    n: int
    correct: int
    accuracy: float
    real_recognised: float
    synthetic_detected: float
    p_value: float


@dataclass
class PanelScore:
    """All readers, and the panel's mean and sample standard deviation of accuracy (sd = 0 for one reader)."""

    readers: list[ReaderScore]
    mean_accuracy: float
    sd_accuracy: float


def read_answers(paths: Sequence[str | Path]) -> list[dict]:
    """Answer records from JSON-lines files; bad lines raise ``ValueError`` naming file and line."""
    out = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"answers file not found: {path}")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}, line {n}: not a JSON object") from None
            missing = [k for k in _REQUIRED if k not in rec]
            if missing:
                raise ValueError(f"{path}, line {n}: missing field(s) {missing}")
            for k in ("truth", "answer"):
                if rec[k] not in ("real", "synthetic"):
                    raise ValueError(f"{path}, line {n}: {k} {rec[k]!r} is not 'real' or 'synthetic'")
            out.append(rec)
    return out


def _binom_p(k: int, n: int) -> float:
    from scipy.stats import binomtest

    return float(binomtest(k, n, 0.5).pvalue) if n else math.nan


def _rate(recs: list[dict], truth: str) -> float:
    sub = [r for r in recs if r["truth"] == truth]
    return sum(r["answer"] == truth for r in sub) / len(sub) if sub else math.nan


def score_answers(records: Iterable[dict]) -> PanelScore:
    """Score answer records (dicts with ``reader``, ``item``, ``truth``, ``answer``).

    A reader's repeated answer to the same item counts once (the first one), as the server records it.
    """
    by_reader: dict[str, dict[str, dict]] = {}
    for r in records:
        seen = by_reader.setdefault(str(r["reader"]), {})
        if r["item"] in seen:
            log.warning("reader %s answered item %s twice; the first answer counts", r["reader"], r["item"])
            continue
        seen[r["item"]] = r
    if not by_reader:
        raise ValueError("no answers to score")
    scores = []
    for reader in sorted(by_reader):
        recs = list(by_reader[reader].values())
        k = sum(r["answer"] == r["truth"] for r in recs)
        scores.append(
            ReaderScore(
                reader,
                len(recs),
                k,
                k / len(recs),
                _rate(recs, "real"),
                _rate(recs, "synthetic"),
                _binom_p(k, len(recs)),
            )
        )
    acc = [s.accuracy for s in scores]
    mean = sum(acc) / len(acc)
    sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1)) if len(acc) > 1 else 0.0
    return PanelScore(scores, mean, sd)


def format_scores(panel: PanelScore) -> str:
    """A plain-text table of the readers and the panel line."""
    lines = [f"{'reader':<20} {'n':>5} {'correct':>7} {'accuracy':>8} {'real->real':>10} {'syn->syn':>8} {'p(50%)':>7}"]
    for s in panel.readers:
        lines.append(
            f"{s.reader:<20} {s.n:>5} {s.correct:>7} {100 * s.accuracy:>7.1f}% "
            f"{100 * s.real_recognised:>9.1f}% {100 * s.synthetic_detected:>7.1f}% {s.p_value:>7.3f}"
        )
    lines.append(
        f"panel ({len(panel.readers)} readers): accuracy {100 * panel.mean_accuracy:.1f}% "
        f"+- {100 * panel.sd_accuracy:.1f}% (mean +- sd; 50% = indistinguishable)"
    )
    return "\n".join(lines)


def score_files(paths: Sequence[str | Path], output: str | Path | None = None) -> PanelScore:
    """Score answer files; with ``output``, also write the scores as JSON there."""
    from dataclasses import asdict

    from ..checkpoints import atomic_write

    panel = score_answers(read_answers(paths))
    if output:
        with atomic_write(output) as tmp:
            tmp.write_text(json.dumps({"answers": [str(p) for p in paths], **asdict(panel)}, indent=1))
    return panel
