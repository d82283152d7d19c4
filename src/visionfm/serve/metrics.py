"""The service's own counters and histograms, rendered in the Prometheus text exposition format (no dependency).

Thread-safe: request handlers (event loop), upload decoding (thread pool) and the batching worker all record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "Counter", "Histogram", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values)
    ]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Counter:
    """A monotonically increasing count per label combination."""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            lines += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    """Cumulative buckets, sum and count per label combination."""

    def __init__(self, name: str, help: str, buckets: Iterable[float], labels: Iterable[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self._data: dict[tuple[str, ...], list[float]] = {}  # per label: bucket counts..., sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            d = self._data.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    d[i] += 1
            d[-2] += value
            d[-1] += 1

    def count(self, *labels: str) -> int:
        return int(self._data.get(labels, [0.0])[-1])

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for k, d in sorted(self._data.items()):
                for b, n in zip(self.buckets, d):
                    le = f'le="{b:g}"'
                    lines.append(f"{self.name}_bucket{_labels(self.labels, k, le)} {n:g}")
                inf = 'le="+Inf"'
                lines.append(f"{self.name}_bucket{_labels(self.labels, k, inf)} {d[-1]:g}")
                lines.append(f"{self.name}_sum{_labels(self.labels, k)} {d[-2]:.6g}")
                lines.append(f"{self.name}_count{_labels(self.labels, k)} {d[-1]:g}")
        return lines


class Metrics:
    """Everything ``/metrics`` shows: requests by endpoint and status, latency, batch sizes, queue depth."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0) -> None:
        self.requests = Counter(
            "visionfm_requests_total", "HTTP requests by endpoint and status code", ("endpoint", "status")
        )
        self.latency = Histogram(
            "visionfm_request_seconds", "request latency in seconds", LATENCY_BUCKETS, ("endpoint",)
        )
        self.batch = Histogram("visionfm_batch_size", "images per forward pass", BATCH_BUCKETS, ("model",))
        self.inference = Histogram(
            "visionfm_inference_seconds", "seconds per forward pass", LATENCY_BUCKETS, ("model",)
        )
        self.images = Counter("visionfm_images_total", "images run through a model", ("model",))
        self.rejected = Counter("visionfm_rejected_total", "requests refused before inference", ("reason",))
        self.queue_depth = queue_depth

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.latency, self.batch, self.inference, self.images, self.rejected):
            lines += m.render()
        lines += [
            "# HELP visionfm_queue_depth requests waiting for the model",
            "# TYPE visionfm_queue_depth gauge",
            f"visionfm_queue_depth {self.queue_depth()}",
        ]
        return "\n".join(lines) + "\n"
