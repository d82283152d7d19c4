"""One real-image training step on DRIVE and the IDRiD optic-disc centre (skipped when the data is absent)."""

import numpy as np
import torch

from tests.helpers import DATA, require
from visionfm.dense.data import resolve_spec
from visionfm.dense.datasets import SegmentationDataset
from visionfm.dense.decoders import build_dense_model
from visionfm.dense.losses import dice_focal_loss
from visionfm.dense.transforms import JointAugment


def test_drive_real_training_step(tiny_encoder):
    spec = resolve_spec(require(DATA / "DRIVE"), "training")
    items = spec.items()
    assert len(items) == 20
    ds = SegmentationDataset(items[:2], spec, 64, [0.5] * 3, [0.25] * 3, JointAugment())
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and s["target"].shape == (1, 64, 64)
    assert 0.05 < s["target"].mean() < 0.25 and s["valid"].mean() > 0.4  # vessels ~12% of the FOV
    torch.manual_seed(0)
    model = build_dense_model("unetr", tiny_encoder, 1).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in s}
    losses = []
    for _ in range(4):  # real training steps on real vessels: the loss must go down
        loss = dice_focal_loss(model(batch["image"]), batch["target"], batch["valid"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(np.isfinite, losses)) and losses[-1] < losses[0]
    assert all(p.grad is None for p in model.encoder.parameters())  # frozen encoder untouched


def test_idrid_od_centre_inside_disc():
    from visionfm.dense.data import read_mask
    from visionfm.dense.landmarks import centre_of_mask

    m = read_mask(require(DATA / "IDRiD-A-segmentation" / "train_masks" / "OD" / "IDRiD_01_OD.tif")) > 0
    x, y = centre_of_mask(m)
    assert m[round(y), round(x)]  # a disc is convex: its centroid lies inside
    assert m.shape == (2848, 4288)
