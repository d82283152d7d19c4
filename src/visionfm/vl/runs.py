"""``visionfm.vl.load(run)``: a trained vision-language run, verified and ready to embed images and text.

::

    vl = visionfm.vl.load("runs/vl")
    probs = vl.zeroshot(["a.jpg", "b.jpg"], ["glaucoma", "normal"], domain_knowledge=True)   # [2, 2]
    img = vl.encode_image(["a.jpg"]); txt = vl.encode_text(["A fundus photograph of glaucoma."])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from ..checkpoints import load_encoder
from ..data.images import read_image, resize_image
from ..errors import UserError
from ..fileio import file_sha256
from .knowledge import Knowledge, load_knowledge
from .model import VLModel
from .text import load_text_encoder
from .train import PROJECTION_FILE, RUN_INFO

__all__ = ["VLRun", "load"]

log = logging.getLogger(__name__)


def _read_info(run: Path) -> dict:
    path = run / RUN_INFO
    if not path.is_file():
        raise UserError(f"{run}: not a vision-language run (no {RUN_INFO}; train one with 'visionfm vl train')")
    info = json.loads(path.read_text())
    if info.get("kind") != "vision-language":
        raise UserError(f"{path}: not a vision-language run (kind {info.get('kind')!r})")
    return info


def _verified(path: Path, sha: str, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} {path} not found (moved? the run records its path and SHA-256)")
    if sha and file_sha256(path) != sha:
        raise UserError(f"{what} {path}: SHA-256 differs from the one the run recorded; it is not the same file")
    return path


class VLRun:
    """A loaded run: image and text encoders, projections, knowledge.

    Attributes:
        model: the :class:`VLModel` in eval mode.
        info: the run's ``run.json``.
        knowledge: the category dictionary (built-in, or extended with ``knowledge=``).
    """

    def __init__(self, model: VLModel, info: dict, knowledge: Knowledge, input_size: int) -> None:
        self.model, self.info, self.knowledge, self.input_size = model.eval(), info, knowledge, input_size
        self.modality = model.image_encoder.info.modality

    @torch.no_grad()
    def image_features(self, images: Sequence[str | Path | np.ndarray] | Tensor, batch_size: int = 32) -> Tensor:
        """Encoder CLS features ``[N, D]`` of image files / arrays, or of normalised tensors ``[N, 3, S, S]``."""
        enc = self.model.image_encoder
        if isinstance(images, Tensor):
            return torch.cat([enc(images[i : i + batch_size]).cls for i in range(0, len(images), batch_size)])
        mean = torch.tensor(enc.info.mean).view(3, 1, 1)
        std = torch.tensor(enc.info.std).view(3, 1, 1)
        out = []
        for i in range(0, len(images), batch_size):
            xs = []
            for im in images[i : i + batch_size]:
                arr = im if isinstance(im, np.ndarray) else read_image(im)
                x = torch.from_numpy(resize_image(arr, (self.input_size, self.input_size), "bilinear")).permute(2, 0, 1)
                xs.append((x - mean) / std)
            out.append(enc(torch.stack(xs)).cls.float())
        return torch.cat(out)

    @torch.no_grad()
    def encode_image(self, images: Sequence[str | Path | np.ndarray] | Tensor) -> Tensor:
        """Unit image embeddings ``[N, E]``."""
        return self.model.embed_image(self.image_features(images))

    @torch.no_grad()
    def encode_image_features(self, feats: Tensor | np.ndarray) -> Tensor:
        """Unit image embeddings ``[N, E]`` from cached CLS features ``[N, D]``."""
        return self.model.embed_image(torch.as_tensor(np.asarray(feats), dtype=torch.float32))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Unit text embeddings ``[N, E]`` of raw texts."""
        return self.model.embed_text(self.model.text_encoder.encode(list(texts)))

    @torch.no_grad()
    def class_embeddings(
        self, classes: Sequence[str], domain_knowledge: bool = False, modality: str | None = None
    ) -> Tensor:
        """``[C, E]`` unit class embeddings: the mean of each class's prompt ensemble, re-normalised."""
        if not classes:
            raise UserError("give at least one class name")
        rows = []
        for c in classes:
            prompts = self.knowledge.prompts(c, modality or self.modality, domain_knowledge)
            rows.append(torch.nn.functional.normalize(self.encode_text(prompts).mean(0), dim=0))
        return torch.stack(rows)

    def logits(
        self, img: Tensor, classes: Sequence[str], domain_knowledge: bool = False, modality: str | None = None
    ) -> Tensor:
        """``[N, C]`` scaled similarities of unit image embeddings to the class ensembles."""
        return self.model.logits(img, self.class_embeddings(classes, domain_knowledge, modality))

    def zeroshot(
        self,
        images: Sequence[str | Path | np.ndarray] | Tensor,
        classes: Sequence[str],
        domain_knowledge: bool = False,
        modality: str | None = None,
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` (softmax of the scaled cosine similarities)."""
        with torch.no_grad():
            return self.logits(self.encode_image(images), classes, domain_knowledge, modality).softmax(-1).numpy()


def load(run: str | Path, knowledge: str | Path | None = None, device: str = "cpu") -> VLRun:
    """Load a run folder written by :func:`visionfm.vl.train_vl`, checking every file against its SHA-256.

    Args:
        run: the run folder.
        knowledge: a YAML extending the built-in category dictionary (see :mod:`visionfm.vl.knowledge`).
    """
    run = Path(run)
    info = _read_info(run)
    img = info["image_encoder"]
    weights = Path(img["weights"]) if Path(img["weights"]).is_absolute() else run / img["weights"]
    encoder = load_encoder(_verified(weights, img["sha256"], "image encoder"), img["modality"] or None)
    txt = info["text_encoder"]
    name = str(run / txt["name"]) if (run / txt["name"]).is_dir() else txt["name"]
    text = load_text_encoder(name, txt["sha256"])
    model = VLModel(encoder, text, embed_dim=int(info["embed_dim"]))
    proj = _verified(run / PROJECTION_FILE, "", "projection file")
    with safe_open(str(proj), framework="pt") as f:
        model.load_projection_state({k: f.get_tensor(k) for k in f.keys()}, str(proj))
    kn = load_knowledge(knowledge)
    if kn.version.split("+")[0] != str(info["knowledge_version"]).split("+")[0]:
        log.warning("run trained with knowledge version %s, using %s", info["knowledge_version"], kn.version)
    return VLRun(model.to(device), info, kn, int(info["input_size"]))
