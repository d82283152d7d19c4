"""MedMNIST ``.npz`` archives (e.g. RetinaMNIST) as image folders in the official ``vfm`` layout.

MedMNIST ships each data set as one ``.npz`` with ``{train,val,test}_images`` ``[N, H, W(, 3)]`` uint8 and
``{split}_labels`` ``[N, K]``. Every visionfm reader takes folders, so the archive is written once as
``<out>/<split>/<i>.png`` plus ``<out>/<split>_labels.txt`` lines ``<split>/<i>.png;<labels>``, which
``scan(out, split="train")`` (layout ``vfm``) reads. The official splits are kept exactly: the MedMNIST v2
baselines are reported on them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ..checkpoints.io import atomic_write

__all__ = ["MEDMNIST_SPLITS", "medmnist_to_folder"]

log = logging.getLogger(__name__)
MEDMNIST_SPLITS = ("train", "val", "test")


def _load_arrays(npz: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not npz.is_file():
        raise FileNotFoundError(f"MedMNIST archive not found: {npz}")
    try:
        data = np.load(npz, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{npz}: not a readable .npz archive ({e})") from None
    out = {}
    for split in MEDMNIST_SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in data or lk not in data:
            raise ValueError(f"{npz}: missing array {ik!r} or {lk!r}; found {sorted(data.files)}")
        try:
            images, labels = data[ik], data[lk].reshape(len(data[lk]), -1)
        except ValueError as e:  # an object (pickled) array: refused, never unpickled
            raise ValueError(f"{npz}: {ik} / {lk}: {e} (pickled arrays are refused)") from None
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(
                f"{npz}: {ik} must be uint8 [N, H, W(, 3)] with one label row per image; "
                f"got {images.dtype} {images.shape} and {lk} {labels.shape}"
            )
        out[split] = (images, labels)
    return out


def medmnist_to_folder(npz: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a MedMNIST archive as PNGs in the ``vfm`` layout; returns ``out_dir``.

    Args:
        npz: the ``.npz`` archive.
        out_dir: destination folder. An existing conversion of the same archive is reused.
        overwrite: rewrite even when a conversion of this archive already exists.

    Raises:
        FileNotFoundError: the archive does not exist.
        ValueError: it is not a MedMNIST archive, or ``out_dir`` holds something else.
    """
    npz, out = Path(npz), Path(out_dir)
    stamp = out / "medmnist.json"
    source = {"source": str(npz.resolve()), "size": npz.stat().st_size if npz.is_file() else None}
    if stamp.is_file() and not overwrite and json.loads(stamp.read_text()) == source:
        return out
    if out.exists() and any(out.iterdir()) and not stamp.is_file():
        raise ValueError(f"{out}: folder is not empty and holds no MedMNIST conversion; choose an empty folder")
    for split, (images, labels) in _load_arrays(npz).items():
        (out / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (img, lab) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(out / split / f"{i}.png")
            lines.append(f"{split}/{i}.png;" + ",".join(str(int(v)) for v in lab))
        with atomic_write(out / f"{split}_labels.txt") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        log.info("%s: %d %s images -> %s", npz.name, len(images), split, out / split)
    with atomic_write(stamp) as tmp:  # written last: its presence means the conversion is complete
        tmp.write_text(json.dumps(source))
    return out
