"""The HTTP service: FastAPI routes over the served models, the dynamic batcher and the metrics.

Routes: ``POST /v1/predict`` (one or more files), ``POST /v1/segment`` (mask PNG or JSON), ``POST /v1/explain``
(attention heat-map overlay), ``POST /v1/embed`` and ``POST /v1/retrieve`` (:mod:`visionfm.serve.embed`),
``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /``
(the web page), ``/docs`` (OpenAPI). Every refusal is a 4xx (or 503 when busy, 504 on timeout) with a JSON
``{"detail": message}``; nothing a client sends can stop the service.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from .batching import DynamicBatcher, Overloaded
from .config import API_KEY_HEADER, ServeConfig
from .embed import add_embed, add_retrieve
from .metrics import Metrics
from .models import ServedModel, heat_overlay, png_base64, png_bytes
from .uploads import Upload, UploadError, decode_upload, decode_volume_upload, stack_bscans

__all__ = ["STATIC", "create_app"]

log = logging.getLogger(__name__)
STATIC = resources.files("visionfm.serve") / "static"
_OPEN = ("/", "/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")


class _State:
    """What the routes share."""

    def __init__(self, cfg: ServeConfig, models: dict[str, ServedModel]) -> None:
        self.cfg, self.models = cfg, models
        self.metrics = Metrics()
        self.batcher = DynamicBatcher(
            cfg.max_batch, cfg.batch_wait_ms, cfg.queue_size, self._on_batch, hold_ms=cfg.batch_hold_ms
        )
        self.metrics.queue_depth = self.batcher.depth

    def _on_batch(self, label: str, size: int, seconds: float) -> None:
        self.metrics.batch.observe(size, label)
        self.metrics.inference.observe(seconds, label)
        self.metrics.images.inc(label, by=size)

    def model(self, name: str | None) -> ServedModel:
        if not name:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise HTTPException(400, f"several models are served ({', '.join(self.models)}): name one with model=NAME")
        if name not in self.models:
            raise HTTPException(404, f"unknown model {name!r}; served: {', '.join(self.models)}")
        return self.models[name]

    async def read(
        self, files: list[UploadFile], volumes: bool = False, bscans: bool = False, draft: int | None = None
    ) -> list[Upload]:
        """Decode the uploads (in the thread pool); ``bscans``: the images are the B-scans of one volume; ``draft``:
        JPEG images are draft-decoded to at least this side (:meth:`ModelCard.draft_side` of the model)."""
        if bscans:
            if not volumes:
                raise HTTPException(400, "bscans=true stacks B-scans into a volume: it needs a volume classifier")
            if len(files) > self.cfg.max_bscans:
                raise HTTPException(413, f"{len(files)} B-scans in one request; at most {self.cfg.max_bscans}")
            one = await self.read(files)  # each B-scan checked and decoded as an image
            return [await run_in_threadpool(stack_bscans, one, files[0].filename or "volume", self.cfg.max_pixels)]
        if len(files) > self.cfg.max_files:
            raise HTTPException(413, f"{len(files)} files in one request; at most {self.cfg.max_files}")
        out = []
        for f in files:
            data = await f.read()
            if len(data) > self.cfg.max_upload_bytes:
                raise UploadError(
                    f"{f.filename}: {len(data)} bytes exceeds the upload limit of {self.cfg.max_upload_mb:g} MB", 413
                )
            name = f.filename or "upload"
            if volumes:
                out.append(await run_in_threadpool(decode_volume_upload, data, name, self.cfg.max_pixels))
            else:
                out.append(await run_in_threadpool(decode_upload, data, name, self.cfg.max_pixels, draft))
        return out

    async def infer(
        self, m: ServedModel, uploads: list[Upload], interval: float | None, arrived: Callable[[], None] | None = None
    ) -> list[list]:
        """Prepare the uploads and run them through the batcher; ``arrived`` withdraws their announcement
        (:meth:`DynamicBatcher.arriving`) just before the jobs are submitted."""
        if "interval_days" in m.card.inputs and interval is None:
            raise HTTPException(
                400,
                f"model {m.name!r} forecasts: send the interval to the next visit in days (form field interval_days)",
            )
        payloads = [await run_in_threadpool(m.prepare, u.image, interval) for u in uploads]
        if arrived is not None:
            arrived()
        return await asyncio.gather(
            *[self.batcher.submit(m.run_batch, (m.name, p["image"].shape), p, m.name) for p in payloads]
        )

    async def timed(self, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.cfg.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(
                504, f"no answer within {self.cfg.timeout_s:g} s; retry later or send fewer images"
            ) from None


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _install_middleware(app: FastAPI, state: _State) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > state.cfg.max_upload_bytes):
            state.metrics.rejected.inc("too_large")
            response: Response = JSONResponse(
                {"detail": f"request body of {length} bytes exceeds the limit of {state.cfg.max_upload_mb:g} MB"}, 413
            )
        elif (
            state.cfg.api_key
            and path.startswith(("/v1/", "/metrics"))
            and not hmac.compare_digest(request.headers.get(API_KEY_HEADER, "").encode(), state.cfg.api_key.encode())
        ):
            state.metrics.rejected.inc("api_key")
            response = JSONResponse({"detail": f"missing or wrong API key (header {API_KEY_HEADER})"}, 401)
        else:
            response = await call_next(request)
        name = _route_name(request) if path not in _OPEN else path
        state.metrics.requests.inc(name, str(response.status_code))
        if path.startswith("/v1/"):
            state.metrics.latency.observe(time.perf_counter() - t0, name)
        return response


def _install_errors(app: FastAPI, state: _State) -> None:
    @app.exception_handler(UploadError)
    async def bad_upload(_: Request, e: UploadError):
        state.metrics.rejected.inc("bad_upload" if e.status == 400 else "too_large")
        return JSONResponse({"detail": str(e)}, e.status)

    @app.exception_handler(Overloaded)
    async def busy(_: Request, e: Overloaded):
        state.metrics.rejected.inc("queue_full")
        return JSONResponse({"detail": str(e)}, 503, headers={"Retry-After": "1"})

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, e: ValueError):  # e.g. an image the model cannot take (size, channels)
        return JSONResponse({"detail": str(e).splitlines()[0] if str(e) else type(e).__name__}, 400)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception):  # a bug: logged with its traceback, the service goes on
        log.error("internal error", exc_info=e)
        return JSONResponse({"detail": f"internal error ({type(e).__name__}); see the server log"}, 500)


def _short(m: ServedModel) -> dict[str, Any]:
    return m.summary()


def create_app(cfg: ServeConfig, models: dict[str, ServedModel]) -> FastAPI:
    """The FastAPI application serving ``models`` with the limits and batching of ``cfg``."""
    state = _State(cfg, models)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        state.batcher.close()

    app = FastAPI(
        title="VisionFM service",
        version=__version__,
        lifespan=lifespan,
        description="Predictions, segmentation masks and attention heat maps from trained VisionFM runs.",
    )
    app.state.visionfm = state
    _install_middleware(app, state)
    _install_errors(app, state)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "models": list(models), "queue": state.batcher.depth(), "backend": cfg.backend}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {
            "models": [m.identity() for m in models.values()],
            "limits": {
                "max_upload_mb": cfg.max_upload_mb,
                "max_pixels": cfg.max_pixels,
                "max_files": cfg.max_files,
                "max_texts": cfg.max_texts,
                "max_batch": cfg.max_batch,
                "timeout_s": cfg.timeout_s,
            },
            "api_key_required": bool(cfg.api_key),
        }

    for add in (_add_predict, _add_segment, _add_explain, add_embed, add_retrieve):
        add(app, state)
    return app


def _add_predict(app: FastAPI, state: _State) -> None:
    @app.post("/v1/predict")
    async def predict(
        file: list[UploadFile] = File(..., description="one or more images or DICOM files"),
        model: str | None = Form(None),
        interval_days: float | None = Form(None),
        threshold: float | None = Form(
            None, ge=0.0, le=1.0, description="default: a segmentation run's validation thresholds, else 0.5"
        ),
        classes: str | None = Form(None, description="vision-language runs: class names, comma-separated"),
        domain_knowledge: bool = Form(True, description="vision-language runs: prompt ensembles with descriptions"),
        bscans: bool = Form(False, description="volume classifiers: the images are the B-scans of one volume"),
    ) -> dict:
        """Outputs of a model for each uploaded image: probabilities / values / landmarks / mask fractions; for a
        vision-language run, zero-shot probabilities of the named classes."""
        m = state.model(model)
        names = _class_names(classes) if m.card.kind == "vl" else None

        async def work() -> dict:
            # JPEGs decoded as the run's training features were (draft or full), so answers match `predict`
            with state.batcher.arriving(len(file)) as arrived:  # a batch being collected waits for these
                volumes = m.card.kind == "volume"
                uploads = await state.read(file, volumes=volumes, bscans=bscans, draft=m.card.draft_side())
                rows = await state.infer(m, uploads, interval_days, arrived)
            results = []
            for u, row in zip(uploads, rows):
                if names is not None:
                    res = await run_in_threadpool(m.zeroshot, row[0], names, domain_knowledge)
                else:
                    res = await run_in_threadpool(m.describe, row, u.image, threshold)
                results.append(
                    {
                        "filename": u.filename,
                        "width": u.size[0],
                        "height": u.size[1],
                        **res,
                        **({"dicom": u.dicom} if u.dicom else {}),
                    }
                )
            return {"model": _short(m), "results": results}

        return await state.timed(work())


def _class_names(classes: str | None, most: int = 64, longest: int = 200) -> list[str]:
    """The class names of a zero-shot request (comma- or newline-separated), checked."""
    names = [c.strip() for c in (classes or "").replace("\n", ",").split(",") if c.strip()]
    if len(names) < 2:
        raise HTTPException(
            400, "a vision-language model classifies among class names: send at least two as classes=a,b (form field)"
        )
    if len(names) > most or max(map(len, names)) > longest or len(set(names)) < len(names):
        raise HTTPException(400, f"classes: at most {most} distinct names of at most {longest} characters each")
    return names


def _add_segment(app: FastAPI, state: _State) -> None:
    @app.post("/v1/segment", responses={200: {"content": {"image/png": {}}}})
    async def segment(
        file: UploadFile = File(...),
        model: str | None = Form(None),
        format: str = Query("json", pattern="^(json|png)$"),
        class_name: str | None = Query(None, alias="class"),
        threshold: float | None = Query(
            None, ge=0.0, le=1.0, description="default: the run's validation thresholds (--tune-thresholds), else 0.5"
        ),
    ) -> Any:
        """Masks of a segmentation run: JSON with base64 PNGs and an overlay, or one class's mask as image/png."""
        m = state.model(model)
        if m.card.kind != "segment":
            raise HTTPException(400, f"model {m.name!r} is a {m.card.kind} model; /v1/segment needs a segmentation run")
        if class_name is not None and class_name not in m.card.names:
            raise HTTPException(400, f"unknown class {class_name!r}; {m.name} segments {', '.join(m.card.names)}")

        async def work() -> Any:
            with state.batcher.arriving() as arrived:
                (u,) = await state.read([file])
                (row,) = await state.infer(m, [u], None, arrived)
            masks = await run_in_threadpool(m.masks, row[0], u.image, threshold)
            names = m.card.names
            if format == "png":
                k = names.index(class_name) if class_name else 0
                return Response(png_bytes(masks[k].astype("uint8") * 255), media_type="image/png")
            over = await run_in_threadpool(lambda: png_base64(m.segmentation_overlay(u.image, masks)))
            return {
                "model": _short(m),
                "filename": u.filename,
                "width": u.size[0],
                "height": u.size[1],
                "classes": names,
                "pixel_fraction": {n: float(k.mean()) for n, k in zip(names, masks)},
                "masks": {n: png_base64(k.astype("uint8") * 255) for n, k in zip(names, masks)},
                "overlay": over,
            }

        return await state.timed(work())


def _add_explain(app: FastAPI, state: _State) -> None:
    @app.post("/v1/explain", responses={200: {"content": {"image/png": {}}}})
    async def explain(
        file: UploadFile = File(...),
        model: str | None = Form(None),
        format: str = Query("png", pattern="^(json|png)$"),
        map: str = Query("mean", pattern="^(mean|rollout)$"),
    ) -> Any:
        """The encoder's CLS attention (merged last-block map or rollout) blended over the image."""
        m = state.model(model)
        if m.loaded.encoder is None:
            raise HTTPException(400, f"model {m.name!r} has no ViT encoder (a U-Net): no attention to draw")

        async def work() -> Any:
            (u,) = await state.read([file])
            x = await run_in_threadpool(m.explain_input, u.image)
            mean, roll = await state.batcher.submit(m.explain_batch, ("explain", m.name, x.shape), x, m.name)
            heat = mean if map == "mean" else roll
            disp, over = await run_in_threadpool(heat_overlay, u.image, heat, state.cfg.explain_side)
            if format == "png":
                return Response(png_bytes(over), media_type="image/png")
            return {
                "model": _short(m),
                "filename": u.filename,
                "map": map,
                "grid": list(heat.shape),
                "image": png_base64(disp),
                "overlay": png_base64(over),
            }

        return await state.timed(work())
