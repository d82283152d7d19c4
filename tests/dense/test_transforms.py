"""Joint transforms keep image, masks, FOV and landmarks aligned (known answers)."""

import torch

from visionfm.dense.transforms import JointAugment, affine_matrix, apply, warp


def test_hflip_is_exact_mirror_and_moves_points():
    img = torch.arange(20.0).view(1, 4, 5)
    m = affine_matrix((4, 5), hflip=True)
    out = apply({"image": img / 20, "target": img / 20, "valid": img, "points": torch.tensor([[1.0, 2.0]])}, m)
    assert torch.allclose(out["image"], (img / 20).flip(-1), atol=1e-5)
    assert torch.equal(out["valid"], img.flip(-1))  # nearest: exact
    assert torch.allclose(out["points"], torch.tensor([[3.0, 2.0]]))  # x -> W-1-x = 4-1


def test_rotation_90_is_rot90_and_points_follow():
    img = torch.arange(16.0).view(1, 4, 4)
    m = affine_matrix((4, 4), angle=90)
    assert torch.allclose(warp(img, m), torch.rot90(img, 1, (1, 2)), atol=1e-5)
    # Value 3 sits at (x=3, y=0); rot90 (counter-clockwise on screen) moves it to (0, 0).
    out = apply({"image": img / 16, "points": torch.tensor([[3.0, 0.0]])}, m)
    assert torch.allclose(out["points"], torch.zeros(1, 2), atol=1e-6)


def test_random_augment_keeps_mark_and_landmark_together():
    torch.manual_seed(0)
    h, w = 40, 48
    for _ in range(5):
        pt = torch.tensor([[20.0, 17.0]])
        mask = torch.zeros(1, h, w)
        mask[0, 17, 20] = 1.0
        img = torch.zeros(3, h, w)
        img[:, 17, 20] = 1.0
        out = JointAugment(brightness=0, contrast=0)({"image": img, "target": mask, "points": pt})
        t = out["target"][0]
        # The bilinearly spread mark's centre of mass is where the landmark went.
        ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        cx, cy = (t * xs).sum() / t.sum(), (t * ys).sum() / t.sum()
        assert abs(cx - out["points"][0, 0]) < 0.35 and abs(cy - out["points"][0, 1]) < 0.35
        assert torch.allclose(out["image"][0], t, atol=1e-5)  # image and mask moved identically
