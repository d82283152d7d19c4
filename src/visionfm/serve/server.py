"""Running the service: in the foreground (``visionfm serve``) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

from .app import create_app
from .config import ServeConfig
from .models import ServedModel, load_served

__all__ = ["RunningServer", "build_app", "serve", "start_server"]

log = logging.getLogger(__name__)


def build_app(cfg: ServeConfig, models: dict[str, ServedModel] | None = None):
    """The application for ``cfg`` (its runs loaded, exported first with the onnxruntime backend)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if models is None:
        models = load_served(cfg.runs, cfg.backend, cfg.device, cfg.threads, cfg.onnx, precision=cfg.precision)
    return create_app(cfg, models)


def _uvicorn_config(cfg: ServeConfig, app):
    import uvicorn

    # h11 and asyncio: pure-Python, identical everywhere; no access log (the metrics count requests).
    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
        http="h11",
        loop="asyncio",
        timeout_keep_alive=15,
    )


def serve(cfg: ServeConfig) -> None:
    """Load the runs and serve until interrupted (Ctrl-C)."""
    import uvicorn

    app = build_app(cfg)
    server = uvicorn.Server(_uvicorn_config(cfg, app))
    _announce(cfg, app)
    server.run()


def _announce(cfg: ServeConfig, app) -> None:
    state = app.state.visionfm
    names = ", ".join(f"{n} ({m.card.kind})" for n, m in state.models.items())
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    log.info(
        "serving %s on http://%s:%d/ (%s backend, batches of up to %d%s); docs at /docs; Ctrl-C stops",
        names,
        host,
        cfg.port,
        cfg.backend,
        cfg.max_batch,
        ", API key required" if cfg.api_key else "",
    )


@dataclass
class RunningServer:
    """A server running in a background thread; ``url`` ends with ``/``; ``stop()`` shuts it down."""

    server: object
    thread: threading.Thread
    url: str
    app: object

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(
    cfg: ServeConfig, models: dict[str, ServedModel] | None = None, startup_timeout: float = 60.0
) -> RunningServer:
    """Start uvicorn in a daemon thread and wait until it listens (``cfg.port`` 0: a free port is picked).

    Raises:
        RuntimeError: the server did not start in time.
    """
    import uvicorn

    app = build_app(cfg, models)
    server = uvicorn.Server(_uvicorn_config(cfg, app))
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=server.run, name="visionfm-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {cfg.host}:{cfg.port}")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, thread, f"http://{cfg.host}:{port}/", app)
