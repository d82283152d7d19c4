"""The training loop: schedules, sampler, learning, exact resume, selection on validation only, configs."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from visionfm.engine import (
    ResumableSampler,
    StepState,
    Task,
    TrainConfig,
    Trainer,
    cosine_schedule,
    linear_warmup_then_constant,
    load_config,
    param_groups_for,
)


class Regression(Task):
    """y = x @ w with dropout noise, so resume must restore the RNG to be exact."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Linear(16, 1))
        self.calls = 0

    def forward(self, batch, state: StepState):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x).squeeze(-1), y)}

    def evaluate(self, loader, device):
        errs = [(self.net(x.to(device)).squeeze(-1) - y.to(device)).pow(2).mean() for x, y in loader]
        return {"mse": float(torch.stack(errs).mean())}


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), epochs=3, batch_size=8, lr=1e-2, progress=False, device="cpu", log_every=1)
    return TrainConfig(**{**base, **kw})


def test_cosine_schedule_known_values():
    s = cosine_schedule(1.0, 0.0, total_steps=6, warmup_steps=2)
    np.testing.assert_allclose(
        s, [0.0, 0.5, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]
    )
    np.testing.assert_allclose(linear_warmup_then_constant(0.04, 0.07, 4, 6), [0.04, 0.05, 0.06, 0.07, 0.07, 0.07])


def test_sampler_shards_without_overlap_and_resumes():
    a, b = ResumableSampler(10, seed=3, rank=0, world_size=2), ResumableSampler(10, seed=3, rank=1, world_size=2)
    assert sorted(list(a) + list(b)) == list(range(10))
    full = list(a)
    a.set_epoch(0, start=2)
    assert list(a) == full[2:] and len(a) == 3
    a.set_epoch(1)
    assert list(a) != full


def test_param_groups_skip_decay_on_biases_and_tokens():
    from visionfm.models import create_encoder

    enc = create_encoder("vit_test")
    groups = param_groups_for(enc)
    no_decay = {id(p) for g in groups if not g["apply_wd"] for p in g["params"]}
    assert id(enc.pos_embed) in no_decay and id(enc.blocks[0].attn.qkv.bias) in no_decay
    assert id(enc.blocks[0].attn.qkv.weight) not in no_decay


def test_loss_decreases_and_logs(tmp_path):
    torch.manual_seed(0)
    res = Trainer(Regression(), _cfg(tmp_path, epochs=20), _data()).fit()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    import json

    losses = [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]
    assert np.mean(losses[-8:]) < 0.2 * np.mean(losses[:8])
    assert (tmp_path / "config.yaml").is_file() and res.last_path.is_file()


def _final_weights(path):
    return torch.load(path, weights_only=True)["task"]


def test_resume_mid_epoch_is_bitwise_equal(tmp_path):
    """Resuming from the step-10 checkpoint (mid-epoch: 8 batches per epoch) ends bitwise equal to the full run."""
    import shutil

    torch.manual_seed(0)
    Trainer(Regression(), _cfg(tmp_path / "full", max_steps=20, checkpoint_every=5, keep_last=10), _data()).fit()
    ck = torch.load(tmp_path / "full" / "checkpoint_00000010.pth", weights_only=True)
    assert ck["step"] == 10 and ck["batches_done"] == 2 and ck["epoch"] == 1
    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "full" / "checkpoint_00000010.pth", tmp_path / "cut" / "checkpoint_last.pth")
    torch.manual_seed(123)  # the resumed process starts from other RNG states; the checkpoint restores them
    Trainer(Regression(), _cfg(tmp_path / "cut", max_steps=20, checkpoint_every=5), _data()).fit(resume=True)
    a, b = (
        _final_weights(tmp_path / "full" / "checkpoint_last.pth"),
        _final_weights(tmp_path / "cut" / "checkpoint_last.pth"),
    )
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_selects_on_validation_only(tmp_path):
    torch.manual_seed(0)
    res = Trainer(
        Regression(), _cfg(tmp_path, select_metric="mse", select_mode="min"), _data(), val_data=_data(16, seed=1)
    ).fit()
    assert res.best_path.is_file() and len(res.history) == 3
    assert res.best_metric == min(h["mse"] for h in res.history)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint_last.pth"):
        Trainer(Regression(), _cfg(tmp_path), _data()).fit(resume=True)
    with pytest.raises(ValueError, match="lower --batch-size"):
        Trainer(Regression(), _cfg(tmp_path, batch_size=128), _data())
    with pytest.raises(ValueError, match="precision"):
        _cfg(tmp_path, precision="fp8")
    torch.manual_seed(0)
    Trainer(Regression(), _cfg(tmp_path / "a", epochs=1), _data()).fit()

    class Other(Regression):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)

    with pytest.raises(ValueError, match="different model"):
        Trainer(Other(), _cfg(tmp_path / "a", epochs=2), _data()).fit(resume=True)


def test_yaml_config_layers(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.5\nepochs: 4\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml", epochs=7, batch_size=None)
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.5, 7, 32)
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown config keys \\['learning_rate'\\]"):
        load_config(TrainConfig, tmp_path / "bad.yaml")


def test_checkpoint_epochs_thins_epoch_end_saves(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(Trainer, "_save", lambda self, state, step: saved.append((state["epoch"], step)))
    Trainer(Regression(), _cfg(tmp_path, epochs=7, checkpoint_epochs=3), _data()).fit()
    # 8 steps per epoch: saves after epochs 3 and 6 (counter 3, 6) and at the last step (epoch counter 7).
    assert saved == [(3, 24), (6, 48), (7, 56)]
    with pytest.raises(ValueError, match="checkpoint_epochs"):
        _cfg(tmp_path, checkpoint_epochs=0)
