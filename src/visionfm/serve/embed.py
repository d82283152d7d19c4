"""Embeddings and image-text retrieval over HTTP: ``POST /v1/embed`` and ``POST /v1/retrieve``.

``/v1/embed`` answers unit-length (L2-normalised) embeddings with the model's identity:

- vision-language runs: images -> the run's image embedding in the joint image-text space (encoder CLS ->
  projection; the model's own forward, batched like ``/v1/predict`` and run by the served backend), texts (``text``
  fields) -> text embeddings in the same space (:meth:`visionfm.vl.VLRun.encode_text`);
- other runs with a ViT encoder: images -> the encoder feature the run uses (a recognition run: the feature its
  head reads, ``cls`` / ``last`` / ``patch`` / ``cls+patch`` with its flip TTA, as ``visionfm extract`` computes it;
  an encoder file or a dense run: the final CLS token), through :func:`visionfm.features.encode_batch` on the
  PyTorch encoder (as heat maps are, whatever the backend), batched by the dynamic batcher.

``/v1/retrieve`` (vision-language runs): images x texts -> cosine similarities, each image's texts ranked and each
text's images ranked, by :func:`visionfm.vl.evaluate.cosine_ranking` (the ranking ``visionfm vl retrieve`` writes).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from .models import ServedModel
from .uploads import Upload

if TYPE_CHECKING:
    from .app import _State

__all__ = ["MAX_TEXT_CHARS", "add_embed", "add_retrieve", "embed_batch", "embedding_facts"]

MAX_TEXT_CHARS = 2000
_RECOGNITION = ("classify", "multilabel", "regress", "forecast")


def embedding_facts(m: ServedModel) -> dict[str, Any]:
    """What an embedding of ``m`` is: its space, the feature it is made of, the blocks and TTA used."""
    if m.card.kind == "vl":
        return {"space": "image-text", "feature": "projection", "normalised": True, "texts": True}
    feature, blocks, tta = _feature(m)
    return {"space": "encoder", "feature": feature, "n_last_blocks": blocks, "tta": tta, "normalised": True}


def _feature(m: ServedModel) -> tuple[str, int, str]:
    """(feature, last blocks, TTA): a recognition run's own, else the final CLS token."""
    if m.card.kind in _RECOGNITION:
        return m.card.feature or "cls", m.card.n_last_blocks, m.card.tta
    return "last", 1, "none"


def embed_batch(m: ServedModel, payloads: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Batch function (worker thread): normalised images ``[3, S, S]`` -> unit feature vectors ``[F]``."""
    from ..export.pipelines import select_feature
    from ..features import encode_batch

    feature, blocks, tta = _feature(m)
    x = torch.from_numpy(np.stack(payloads)).to(m.device)
    cls, patch = encode_batch(m.features, x, blocks, tta, m.precision)
    out = F.normalize(select_feature(cls, patch, feature).float(), dim=-1)
    return list(out.cpu().numpy())


def _refusal(m: ServedModel) -> str | None:
    if m.card.kind == "volume":
        return (
            f"model {m.name!r} classifies OCT volumes; embeddings are per image: serve the encoder weights file "
            f"its features came from"
        )
    if m.loaded.encoder is None:
        return f"model {m.name!r} has no ViT encoder (a U-Net): no embedding"
    return None


async def image_embeddings(state: _State, m: ServedModel, uploads: list[Upload]) -> list[np.ndarray]:
    """Unit embeddings of decoded uploads, through the dynamic batcher."""
    if m.card.kind == "vl":  # the model's own output: the unit image embedding (either backend)
        return [row[0] for row in await state.infer(m, uploads, None)]
    xs = [await run_in_threadpool(m.explain_input, u.image) for u in uploads]
    fn = functools.partial(embed_batch, m)
    return await asyncio.gather(*[state.batcher.submit(fn, ("embed", m.name, x.shape), x, m.name) for x in xs])


def check_texts(text: list[str] | None, most: int, required: bool = False) -> list[str]:
    """The texts of a request (one ``text`` form field each), checked."""
    texts = [t.strip() for t in text or []]
    if required and not texts:
        raise HTTPException(400, "send at least one text (form field text=..., repeated for several)")
    if any(not t for t in texts):
        raise HTTPException(400, "text: an empty text was sent")
    if len(texts) > most:
        raise HTTPException(413, f"{len(texts)} texts in one request; at most {most}")
    if texts and max(map(len, texts)) > MAX_TEXT_CHARS:
        raise HTTPException(400, f"text: at most {MAX_TEXT_CHARS} characters per text")
    return texts


def _image_rows(uploads: list[Upload], embeddings: list[np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"filename": u.filename, "width": u.size[0], "height": u.size[1], "embedding": e.tolist()}
        for u, e in zip(uploads, embeddings)
    ]


def add_embed(app: FastAPI, state: _State) -> None:
    @app.post("/v1/embed")
    async def embed(
        file: list[UploadFile] | None = File(None, description="images or DICOM files to embed"),
        text: list[str] | None = Form(None, description="vision-language runs: texts to embed (repeat the field)"),
        model: str | None = Form(None),
    ) -> dict:
        """Unit-length embeddings of images (and, for vision-language runs, of texts) with the model's identity."""
        m = state.model(model)
        texts = check_texts(text, state.cfg.max_texts)
        files = file or []
        if not files and not texts:
            raise HTTPException(400, "nothing to embed: send images (file=@...) or, for vision-language runs, text=...")
        if texts and m.card.kind != "vl":
            raise HTTPException(
                400,
                f"model {m.name!r} is a {m.card.kind} model without a text encoder; texts need a vision-language run",
            )
        if files and (why := _refusal(m)):
            raise HTTPException(400, why)

        async def work() -> dict:
            uploads = await state.read(files, draft=m.card.draft_side())  # JPEGs decoded as the run's features were
            imgs = await image_embeddings(state, m, uploads)
            txt = await run_in_threadpool(m.text_embeddings, texts) if texts else np.zeros((0, 0), np.float32)
            dim = len(imgs[0]) if imgs else txt.shape[1]
            return {
                "model": m.summary(),
                "embedding": {**embedding_facts(m), "dim": int(dim)},
                "images": _image_rows(uploads, imgs),
                "texts": [{"text": t, "embedding": e.tolist()} for t, e in zip(texts, txt)],
            }

        return await state.timed(work())


def add_retrieve(app: FastAPI, state: _State) -> None:
    @app.post("/v1/retrieve")
    async def retrieve(
        file: list[UploadFile] = File(..., description="one or more images or DICOM files"),
        text: list[str] = Form(..., description="one or more texts (repeat the field)"),
        model: str | None = Form(None),
        k: int | None = Form(None, ge=1, description="keep the k most similar of each ranking (default all)"),
    ) -> dict:
        """Vision-language runs: every image's texts ranked by cosine similarity, and every text's images."""
        from ..vl.evaluate import cosine_ranking

        m = state.model(model)
        if m.card.kind != "vl":
            raise HTTPException(
                400,
                f"model {m.name!r} is a {m.card.kind} model; retrieval ranks images against texts: it needs a "
                f"vision-language run",
            )
        texts = check_texts(text, state.cfg.max_texts, required=True)

        async def work() -> dict:
            uploads = await state.read(file)
            img = np.stack(await image_embeddings(state, m, uploads))  # [N, E]
            txt = await run_in_threadpool(m.text_embeddings, texts)  # [T, E]
            sim, i2t = cosine_ranking(img, txt, k)  # [N, T], [N, k]
            t2i = cosine_ranking(txt, img, k)[1]  # [T, k]
            return {
                "model": m.summary(),
                "score": "cosine similarity of unit embeddings",
                "images": [
                    {
                        "filename": u.filename,
                        "texts": [{"text": texts[j], "index": int(j), "score": float(sim[i, j])} for j in i2t[i]],
                    }
                    for i, u in enumerate(uploads)
                ],
                "texts": [
                    {
                        "text": t,
                        "images": [
                            {"filename": uploads[i].filename, "index": int(i), "score": float(sim[i, j])}
                            for i in t2i[j]
                        ],
                    }
                    for j, t in enumerate(texts)
                ],
                "similarity": sim.tolist(),
            }

        return await state.timed(work())
