"""Settings of ``visionfm serve``: one dataclass, the command-line flags derived from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["API_KEY_ENV", "API_KEY_HEADER", "BACKENDS", "ServeConfig"]

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("run", "fp32", "bf16", "auto")
API_KEY_ENV = "VISIONFM_API_KEY"
API_KEY_HEADER = "X-API-Key"


@dataclass
class ServeConfig:
    """How the service runs.

    Attributes:
        runs: run folders (recognition, dense, OCT volume, vision-language) or encoder weights files to serve;
            each becomes a model named after its folder (or file stem).
        host: interface to listen on (127.0.0.1: this machine only).
        port: TCP port (0: any free port).
        backend: ``torch`` (eager PyTorch) or ``onnxruntime`` (each run exported to ONNX at start, parity-checked).
        onnx: with the onnxruntime backend, exported ``.onnx`` files to use instead (in the order of ``runs``;
            each must have been exported from that run, checked by SHA-256).
        max_batch: largest number of images in one forward pass (1: no dynamic batching).
        batch_wait_ms: how long the batcher waits for more requests once one has arrived.
        batch_hold_ms: how long, at most, a batch waits for requests whose uploads are still being decoded (they
            join it instead of starting the next batch); 0: not at all.
        queue_size: requests waiting for the model before new ones get 503.
        max_upload_mb: largest request body accepted (413 above).
        max_pixels: largest image (width x height) decoded (413 above; guards against decompression bombs).
        max_files: most files in one request.
        max_bscans: most B-scan images in one request that stacks them into a volume (``bscans=true``).
        max_texts: most texts in one ``/v1/embed`` or ``/v1/retrieve`` request (vision-language runs).
        timeout_s: a request still unanswered after this many seconds gets 504.
        api_key: when set, every /v1 call needs it in the X-API-Key header (default: the VISIONFM_API_KEY
            environment variable; unset: open).
        threads: PyTorch / ONNX Runtime intra-op threads (0: their default).
        device: ``cpu``, ``cuda`` or ``auto`` (torch backend).
        precision: torch backend: ``run`` (default: each run at the precision its training features were
            extracted with, as ``predict`` re-extracts; fp32 for other runs), ``fp32``, ``bf16``, or ``auto`` (bf16
            where the CPU has AMX / AVX512-BF16 or the GPU supports it: a batched forward then costs markedly less
            per image than one image at a time; answers move by bf16 rounding).
        explain_side: longest side of the heat-map and overlay images returned.
    """

    runs: list[str] = field(default_factory=list, metadata={"cli": False})
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = field(default="torch", metadata={"choices": BACKENDS})
    onnx: list[str] = field(default_factory=list)
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    batch_hold_ms: float = 50.0
    queue_size: int = 64
    max_upload_mb: float = 32.0
    max_pixels: int = 40_000_000
    max_files: int = 16
    max_bscans: int = 512
    max_texts: int = 64
    timeout_s: float = 30.0
    api_key: str | None = None
    threads: int = 0
    device: str = "cpu"
    precision: str = field(default="run", metadata={"choices": PRECISIONS})
    explain_side: int = 512

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not one of {list(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not one of {list(PRECISIONS)}")
        for name in ("max_batch", "queue_size", "max_pixels", "max_files", "max_bscans", "max_texts", "explain_side"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_wait_ms", "batch_hold_ms", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_upload_mb <= 0 or self.timeout_s <= 0:
            raise ConfigError("max_upload_mb and timeout_s must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not a TCP port")
        if self.onnx and self.backend != "onnxruntime":
            raise ConfigError("onnx files are served with backend onnxruntime (--backend onnxruntime)")
        if self.onnx and len(self.onnx) != len(self.runs):
            raise ConfigError(f"{len(self.onnx)} ONNX files for {len(self.runs)} runs: give one per run")
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
