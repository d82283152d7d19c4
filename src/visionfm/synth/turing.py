"""Visual Turing test: a local web page that shows real and synthetic images one at a time to a reader.

The server (stdlib ``http.server``, bound to 127.0.0.1) serves one reader per session. Every image is re-encoded as
a PNG through the same square preprocessing at one display size, so neither file type, size, aspect ratio nor
metadata gives the answer away, and image URLs are opaque ids. Each answer is appended to a JSON-lines file at
once (a reader can close the page and come back: answered images are skipped). Scoring lives in
:mod:`visionfm.synth.turing_score`.

Endpoints: ``GET /`` (the page), ``GET /api/state`` (progress and next image id), ``GET /image/<id>.png``,
``POST /api/answer`` with ``{"id": ..., "answer": "real"|"synthetic"}``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import read_image
from .data import scan_sources, square_image
from .turing_page import PAGE_HTML
from .turing_score import read_answers

__all__ = ["ANSWERS", "TuringItem", "TuringServer", "build_session", "make_turing_server", "serve_session"]

log = logging.getLogger(__name__)
ANSWERS = ("real", "synthetic")


@dataclass(frozen=True)
class TuringItem:
    """One image of a session: opaque id, file and the truth (``real`` or ``synthetic``)."""

    id: str
    path: Path
    truth: str


def build_session(
    real: str | Path | list, synthetic: str | Path | list, reader: str, n: int | None = None, seed: int = 0
) -> list[TuringItem]:
    """``n`` real and ``n`` synthetic images (default: as many as the smaller set has), shuffled per reader.

    The same ``seed`` picks the same images for every reader; the order differs per reader (seeded by the name),
    so readers cannot compare notes by position.
    """
    if not reader.strip():
        raise ValueError("--reader must be a non-empty name")
    real_p = [s.path for s in scan_sources(real).samples]
    syn_p = [s.path for s in scan_sources(synthetic).samples]
    n = min(len(real_p), len(syn_p)) if n is None else n
    if not 1 <= n <= min(len(real_p), len(syn_p)):
        raise ValueError(f"n = {n} per set, but there are {len(real_p)} real and {len(syn_p)} synthetic images")
    pick = random.Random(seed)
    chosen = [(p, "real") for p in pick.sample(real_p, n)] + [(p, "synthetic") for p in pick.sample(syn_p, n)]
    # The item id depends on the image, not on its position, so resumed sessions keep their ids.
    order_seed = int(hashlib.sha256(f"{seed}:{reader}".encode()).hexdigest()[:12], 16)
    random.Random(order_seed).shuffle(chosen)
    return [TuringItem(hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()[:12], p, t) for p, t in chosen]


class TuringServer(ThreadingHTTPServer):
    """HTTP server holding one reader's session and the answers file."""

    daemon_threads = True

    def __init__(
        self,
        items: list[TuringItem],
        reader: str,
        answers: Path,
        port: int,
        display_size: int,
        exit_when_done: bool = False,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.items = {it.id: it for it in items}
        self.order = [it.id for it in items]
        self.reader = reader
        self.answers = Path(answers)
        self.display_size = display_size
        self.exit_when_done = exit_when_done
        self.lock = threading.Lock()
        self.answered = _previous_answers(self.answers, reader, set(self.items))
        self.page = PAGE_HTML.encode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def state(self) -> dict:
        nxt = next((i for i in self.order if i not in self.answered), None)
        return {
            "reader": self.reader,
            "total": len(self.order),
            "answered": len(self.answered),
            "next": nxt,
            "done": nxt is None,
        }

    def record(self, item_id: str, answer: str) -> tuple[int, dict]:
        if item_id not in self.items:
            return HTTPStatus.NOT_FOUND, {"error": f"unknown image id {item_id!r}"}
        if answer not in ANSWERS:
            return HTTPStatus.BAD_REQUEST, {"error": f"answer must be one of {ANSWERS}"}
        with self.lock:
            if item_id in self.answered:  # double click / resubmission: the first answer stands
                return HTTPStatus.CONFLICT, {"error": "already answered", **self.state()}
            it = self.items[item_id]
            rec = {
                "reader": self.reader,
                "item": it.id,
                "image": str(it.path),
                "truth": it.truth,
                "answer": answer,
                "correct": answer == it.truth,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            self.answers.parent.mkdir(parents=True, exist_ok=True)
            with open(self.answers, "a") as f:  # one line per answer, flushed: nothing lost if the server dies
                f.write(json.dumps(rec) + "\n")
                f.flush()
            self.answered.add(item_id)
            state = self.state()
        if state["done"] and self.exit_when_done:
            threading.Thread(target=self.shutdown, daemon=True).start()
        return HTTPStatus.OK, state

    def png(self, item_id: str) -> bytes | None:
        it = self.items.get(item_id)
        if it is None:
            return None
        arr = square_image(read_image(it.path), self.display_size)
        buf = io.BytesIO()
        Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()


def _previous_answers(path: Path, reader: str, ids: set[str]) -> set[str]:
    """Items of this session that ``reader`` already answered in ``path`` (bad lines raise ``ValueError``)."""
    if not path.is_file():
        return set()
    return {r["item"] for r in read_answers([path]) if r["reader"] == reader and r["item"] in ids}


class _Handler(BaseHTTPRequestHandler):
    server: TuringServer

    def log_message(self, fmt: str, *args) -> None:  # route the access log to logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: dict) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(HTTPStatus.OK, self.server.state())
        elif path.startswith("/image/") and path.endswith(".png"):
            data = self.server.png(path[len("/image/") : -len(".png")])
            if data is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "unknown image"})
            else:
                self._send(HTTPStatus.OK, data, "image/png")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {path}"})

    def do_POST(self) -> None:
        if self.path != "/api/answer":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(length, 10000)) or b"{}")
            code, obj = self.server.record(str(body.get("id", "")), str(body.get("answer", "")))
        except (ValueError, AttributeError):
            code, obj = HTTPStatus.BAD_REQUEST, {"error": "expected a JSON object {id, answer}"}
        self._json(code, obj)


def make_turing_server(
    real: str | Path | list,
    synthetic: str | Path | list,
    reader: str,
    answers: str | Path,
    port: int = 8000,
    n: int | None = None,
    seed: int = 0,
    display_size: int = 256,
    exit_when_done: bool = False,
) -> TuringServer:
    """Build (and bind) the server of one reader's session; ``port=0`` picks a free port (see ``.url``)."""
    if display_size < 16:
        raise ValueError(f"display size {display_size} too small (>= 16)")
    items = build_session(real, synthetic, reader, n, seed)
    return TuringServer(items, reader, Path(answers), port, display_size, exit_when_done)


def serve_session(server: TuringServer) -> int:
    """Serve a bound session until interrupted (Ctrl-C) or, with ``exit_when_done``, until every image is answered.

    Returns:
        the number of answers this reader has in the file.
    """
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped by the user")
    finally:
        server.server_close()
    return len(server.answered)
