"""Known-answer tests of the iBOT objective, its centres and its schedules."""

import math

import numpy as np
import pytest
import torch

from visionfm.pretrain.losses import (
    dino_cls_loss,
    ibot_patch_loss,
    ibot_patch_loss_sparse,
    teacher_momentum,
    teacher_probs,
    teacher_temperature,
    updated_center,
)


def _ce(t, s_logits, temp):
    """sum_k -t_k log softmax(s / temp)_k, by hand."""
    s = np.asarray(s_logits, dtype=np.float64) / temp
    log_s = s - np.log(np.exp(s).sum())
    return float(-(np.asarray(t) * log_s).sum())


def test_dino_cls_loss_two_views_known_answer():
    # B=1, K=2, two global views: pairs (q=0, v=1) and (q=1, v=0)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    expected = (_ce([0.75, 0.25], [0.0, 1.0], 0.1) + _ce([0.5, 0.5], [1.0, 0.0], 0.1)) / 2
    assert dino_cls_loss(student, teacher, n_global=2).item() == pytest.approx(expected, rel=1e-6)


def test_dino_cls_loss_with_local_views_counts_pairs():
    # two global + one local view: pairs (0,1) (0,2) (1,0) (1,2) -> 4 terms
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ce = lambda q, v: _ce(teacher[q].tolist(), student[v].tolist(), 0.1)
    expected = (ce(0, 1) + ce(0, 2) + ce(1, 0) + ce(1, 2)) / 4
    assert dino_cls_loss(student, teacher, 2).item() == pytest.approx(expected, rel=1e-6)


def test_dino_cls_loss_needs_two_views():
    with pytest.raises(ValueError, match="two views"):
        dino_cls_loss(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), n_global=1)


def test_patch_loss_known_answer_masked_only():
    # G=1 view, B=2 images, N=3 patches, K=2. Image 0: patches 0 and 2 masked; image 1: nothing masked.
    s = torch.tensor([[[[1.0, 0.0], [5.0, -5.0], [0.0, 1.0]], [[0.0, 0.0]] * 3]])
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]], [[0.5, 0.5]] * 3]])
    mask = torch.tensor([[[True, False, True], [False, False, False]]])
    img0 = (_ce([0.5, 0.5], [1.0, 0.0], 0.1) + _ce([0.2, 0.8], [0.0, 1.0], 0.1)) / 2
    expected = (img0 + 0.0) / 2  # an image without masked patches counts 0 in the batch mean (official)
    assert ibot_patch_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-6)


def test_sparse_patch_loss_equals_dense():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 5, 7, generator=g)
    t = torch.softmax(torch.randn(2, 3, 5, 7, generator=g), -1)
    mask = torch.rand(2, 3, 5, generator=g) < 0.4
    mask[1, 2] = False
    flat = mask.reshape(6, 5)
    idx = torch.nonzero(flat)[:, 0]
    sparse = ibot_patch_loss_sparse(s.reshape(6, 5, 7)[flat], t.reshape(6, 5, 7)[flat], idx, flat.sum(1).view(2, 3))
    torch.testing.assert_close(sparse, ibot_patch_loss(s, t, mask))


def test_teacher_probs_centre_and_sharpen():
    p = teacher_probs(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), temp=0.5)
    e = math.exp(1.0)  # (1 - 0.5) / 0.5 = 1 vs 0
    torch.testing.assert_close(p, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))


def test_center_update_cls_and_patch():
    c = updated_center(torch.ones(1, 2), torch.tensor([[1.0, 3.0], [3.0, 5.0]]), momentum=0.9)
    torch.testing.assert_close(c, torch.tensor([[0.9 + 0.1 * 2.0, 0.9 + 0.1 * 4.0]]))
    patches = torch.tensor([[[0.0, 2.0], [2.0, 2.0]], [[4.0, 0.0], [4.0, 4.0]]])  # [B=2, N=2, K=2]
    c2 = updated_center(torch.zeros(1, 1, 2), patches, momentum=0.9)
    torch.testing.assert_close(c2, torch.tensor([[[0.1 * 2.5, 0.1 * 2.0]]]))


def test_teacher_temperature_schedule_matches_linspace():
    ref = np.concatenate([np.linspace(0.07, 0.04, 30), np.full(70, 0.04)])
    got = [teacher_temperature(e, 0.07, 0.04, 30) for e in range(100)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04 and teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07


def test_teacher_momentum_cosine_to_one():
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)


def test_loss_gradient_flows_to_student_only():
    s = torch.randn(4, 6, requires_grad=True)
    t_logits = torch.randn(4, 6, requires_grad=True)
    loss = dino_cls_loss(s, teacher_probs(t_logits, torch.zeros(1, 6), 0.04), 2)
    loss.backward()
    assert s.grad is not None and t_logits.grad is None
    # the teacher distribution is a proper distribution; the loss is >= its entropy (Gibbs)
    t = teacher_probs(t_logits, torch.zeros(1, 6), 0.04)
    entropy = float(-(t * t.clamp_min(1e-12).log()).sum(-1).mean())
    assert torch.allclose(t.sum(-1), torch.ones(4)) and loss.item() >= entropy - 1e-5


def test_koleo_known_answer_and_spreading_gradient():
    from visionfm.pretrain.losses import koleo_loss

    # unit vectors at 0, 90 and 180 degrees: nearest-neighbour distances sqrt(2), sqrt(2), sqrt(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    loss = koleo_loss(x)
    torch.testing.assert_close(loss, torch.tensor(-math.log(math.sqrt(2.0))))
    crowded = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], requires_grad=True)
    loss = koleo_loss(crowded)
    loss.backward()
    assert loss > koleo_loss(x.detach())  # crowded rows cost more
    stepped = crowded.detach() - 0.1 * crowded.grad
    assert koleo_loss(stepped) < loss  # a gradient step pushes them apart
    with pytest.raises(ValueError, match="at least 2 rows"):
        koleo_loss(torch.ones(1, 4))
