"""The head, the augmentations and the task's step on a test-sized model."""

import numpy as np
import pytest
import torch
from PIL import Image

from visionfm.engine import StepState
from visionfm.pretrain import build_encoders
from visionfm.pretrain.augment import GLOBAL_VIEWS, _hsv_to_rgb, _rgb_to_hsv, crop_box, crop_resize, photometric
from visionfm.pretrain.heads import IBOTHead, WeightNormLinear
from visionfm.pretrain.task import IBOTTask

from .conftest import tiny_config


def test_weight_norm_rows_have_unit_norm_when_frozen():
    layer = WeightNormLinear(8, 5, freeze_norm=True)
    torch.testing.assert_close(layer.weight().norm(dim=1), torch.ones(5))
    assert not layer.weight_g.requires_grad and layer.weight_v.requires_grad
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ (layer.weight_v / layer.weight_v.norm(dim=1, keepdim=True)).T)


def test_head_shapes_shared_and_separate():
    shared = IBOTHead(16, 32, 32, hidden_dim=24, bottleneck_dim=8, shared=True)
    cls, patch = shared(torch.randn(2, 5, 16))
    assert cls.shape == (2, 32) and patch.shape == (2, 4, 32) and shared.last_layer2 is None
    sep = IBOTHead(16, 32, 20, hidden_dim=24, bottleneck_dim=8, shared=False)
    assert sep(torch.randn(2, 5, 16))[1].shape == (2, 4, 20)
    assert [k for k in sep.state_dict() if "last_layer" in k] == [
        "last_layer.weight_v",
        "last_layer.weight_g",
        "last_layer2.weight_v",
        "last_layer2.weight_g",
    ]
    z = sep.project(torch.randn(3, 16))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_crop_box_follows_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop_box(100, 140, (0.32, 1.0), (0.8, 1.2), rng)
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 140
        assert 0.3 * 14000 <= h * w <= 14000
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8))
    assert crop_resize(img, 32, (0.3, 1.0), (0.8, 1.2), rng).shape == (32, 32, 3)


def test_hsv_round_trip_and_photometric_range():
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    y = photometric(x, GLOBAL_VIEWS[1], torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(y, photometric(x, GLOBAL_VIEWS[1], torch.Generator().manual_seed(0)))


def test_solarize_known_answer():
    from visionfm.pretrain.augment import ViewSpec

    x = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    y = photometric(x, ViewSpec(0.0, 1.0, jitter_p=0.0, grayscale_p=0.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(y[0, :, 0], torch.tensor([[0.2, 0.4]] * 3))


def test_photometry_is_configurable():
    from visionfm.pretrain import PretrainConfig
    from visionfm.pretrain.augment import ViewSpec, view_specs

    x = torch.rand(8, 3, 16, 16) * 0.5 + 0.25
    off = ViewSpec(0.0, 0.0, jitter_p=0.0, grayscale_p=0.0)
    assert torch.equal(photometric(x, off, torch.Generator().manual_seed(0)), x)
    bright = ViewSpec(0.0, 0.0, jitter=(0.3, 0.0, 0.0, 0.0), jitter_p=1.0, grayscale_p=0.0)
    ratio = photometric(x, bright, torch.Generator().manual_seed(0)) / x  # brightness scales every pixel alike
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image.min() >= 0.7 - 1e-6 and per_image.max() <= 1.3 + 1e-6 and per_image.std() > 0.01
    gray = photometric(x, ViewSpec(0.0, 0.0, jitter_p=0.0, grayscale_p=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    specs = view_specs([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, [1.0, 0.1, 0.5], [0.0, 0.2, 0.0])
    assert specs == (*GLOBAL_VIEWS, ViewSpec(0.5, 0.0))  # the official defaults
    with pytest.raises(ValueError, match="color_jitter"):
        PretrainConfig(data=["x"], color_jitter=[0.4, 0.4, 0.2])
    with pytest.raises(ValueError, match="blur_p"):
        PretrainConfig(data=["x"], blur_p=[1.0, 0.1, 1.5])


def _batch(b=4, size=32, grid=4, local=0):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(b, 2, grid, grid, generator=g) < 0.3
    return {
        "global": torch.randint(0, 256, (b, 2, 3, size, size), generator=g, dtype=torch.uint8),
        "local": torch.randint(0, 256, (b, local, 3, 16, 16), generator=g, dtype=torch.uint8),
        "mask": mask,
        "mean": torch.full((b, 3), 0.5),
        "std": torch.full((b, 3), 0.25),
        "bad": torch.zeros(b, dtype=torch.long),
    }


def _task(tmp_path, **kw):
    torch.manual_seed(0)
    cfg = tiny_config([tmp_path], tmp_path / "run", **kw)
    return IBOTTask(*build_encoders(cfg), cfg), cfg


@pytest.mark.parametrize(
    "kw",
    [{}, {"local_crops": 2, "local_size": 16}, {"mim": False}, {"shared_head": False, "shared_head_teacher": False}],
)
def test_task_step_backward_and_teacher_starts_equal(tmp_path, kw):
    task, cfg = _task(tmp_path, **kw)
    for name, p in task.teacher.named_parameters():
        torch.testing.assert_close(p, dict(task.student.named_parameters())[name])
    out = task(_batch(local=cfg.local_crops), StepState(total_steps=10))
    assert torch.isfinite(out["loss"]) and ("patch_loss" in out) == cfg.mim
    out["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.student["backbone"].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert task.center.abs().sum() > 0


def test_koleo_term_adds_to_the_loss(tmp_path):
    torch.manual_seed(0)
    task, _ = _task(tmp_path, koleo_weight=0.5)
    torch.manual_seed(1)  # same photometric draws for both calls
    out = task(_batch(), StepState(total_steps=10))
    torch.testing.assert_close(out["loss"], out["cls_loss"] + out["patch_loss"] + 0.5 * out["koleo_loss"])
    torch.manual_seed(0)
    plain, _ = _task(tmp_path / "plain")
    torch.manual_seed(1)
    ref = plain(_batch(), StepState(total_steps=10))
    assert "koleo_loss" not in ref
    torch.testing.assert_close(out["cls_loss"], ref["cls_loss"])  # the iBOT terms are untouched


def test_freeze_last_layer_and_per_parameter_clipping(tmp_path):
    task, _ = _task(tmp_path, clip_grad=1e-3)
    task(_batch(), StepState(total_steps=10))["loss"].backward()
    task.before_optimizer_step(StepState(epoch=0))  # epoch 0 < freeze_last_layer=1
    assert task.student["head"].last_layer.weight_v.grad is None
    norms = [p.grad.norm() for p in task.student.parameters() if p.grad is not None]
    assert max(norms) <= 1e-3 * (1 + 1e-4)  # every parameter clipped on its own (official)
    task.zero_grad()
    task(_batch(), StepState(epoch=1, total_steps=10))["loss"].backward()
    task.before_optimizer_step(StepState(epoch=1))
    assert task.student["head"].last_layer.weight_v.grad is not None


def test_ema_update_formula(tmp_path):
    task, _ = _task(tmp_path)
    s = task.student["backbone"].cls_token
    with torch.no_grad():
        s.add_(1.0)
    before = task.teacher["backbone"].cls_token.clone()
    task.on_after_step(StepState(step=0, total_steps=10))  # momentum 0.996 at step 0
    torch.testing.assert_close(task.teacher["backbone"].cls_token, 0.996 * before + 0.004 * s.detach())


def test_param_groups_official_rule(tmp_path):
    task, _ = _task(tmp_path)
    decay, no_decay = task.param_groups()
    names = {id(p): n for n, p in task.student.named_parameters()}
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in no_decay["params"])
    assert "backbone.pos_embed" in {names[id(p)] for p in decay["params"]}  # as officially: decayed
    assert not any(p is task.student["head"].last_layer.weight_g for p in decay["params"])  # frozen norm


@pytest.mark.parametrize("local", [0, 2])
def test_fast_step_equals_the_official_computation(tmp_path, local):
    """Projecting only CLS + masked tokens (ours) gives the official dense loss and the same gradients."""
    import copy

    from visionfm.pretrain.reference import official_style_losses

    ours, _ = _task(tmp_path, drop_path=0.0, local_crops=local, local_size=16)
    ref = copy.deepcopy(ours)
    g = torch.Generator().manual_seed(1)
    x, mask = torch.randn(8, 3, 32, 32, generator=g), torch.rand(8, 4, 4, generator=g) < 0.3
    lo = torch.randn(4 * local, 3, 16, 16, generator=g) if local else None
    ours.center.normal_(generator=g)  # non-zero centres, as after some steps
    ours.center2.normal_(generator=g)
    ref.load_state_dict(ours.state_dict())
    state = StepState(epoch=1, total_steps=10)
    a = ours.losses(x, lo, mask, 2, state)
    b = official_style_losses(ref, x, lo, mask, 2, state)
    for k in ("cls_loss", "patch_loss", "loss"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    a["loss"].backward()
    b["loss"].backward()
    for (_name, p), q in zip(ours.student.named_parameters(), ref.student.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.center2, ref.center2)


def test_activation_checkpointing_gives_the_same_step(tmp_path):
    """grad_checkpointing (memory for ViT-L) recomputes activations: same loss and gradients."""
    import copy

    plain, _ = _task(tmp_path, drop_path=0.0)
    ckpt = copy.deepcopy(plain)
    ckpt.student["backbone"].grad_checkpointing = True
    batch, state = _batch(), StepState(epoch=1, total_steps=10)
    for task in (plain, ckpt):
        torch.manual_seed(0)  # same photometric draws
        task(batch, state)["loss"].backward()
    for p, q in zip(plain.student.parameters(), ckpt.student.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
