"""MAE pretraining: known answers for masking, targets and loss; the encoder on visible patches; a tiny run on real
images with export, reconstruction figure and health; continued pretraining of a RETFound/MAE-format file."""

import json
import logging
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

import visionfm
from visionfm.cli import main
from visionfm.models import VisionTransformer, create_encoder
from visionfm.pretrain import ENCODER_FILE, pretrain, pretrain_config
from visionfm.pretrain.mae import MAEDecoder, mae_loss, patchify, random_masking, sincos_pos_embed, unpatchify

from ..helpers import kill_and_resume
from .conftest import tiny_config


def test_random_masking_by_argsort_of_noise():
    x = torch.arange(4.0).view(1, 4, 1)
    noise = torch.tensor([[0.3, 0.1, 0.4, 0.2]])
    visible, mask, ids_restore = random_masking(x, noise, 0.5)
    assert visible.flatten().tolist() == [1.0, 3.0]  # the two lowest-noise patches, in noise order
    assert mask.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # 1 = hidden, in patch order
    assert ids_restore.tolist() == [[2, 0, 3, 1]]
    full = torch.cat([visible, torch.full((1, 2, 1), -1.0)], 1).gather(1, ids_restore[..., None])
    assert full.flatten().tolist() == [-1.0, 1.0, -1.0, 3.0]  # unshuffling puts visible patches back in place
    v, m, _ = random_masking(torch.randn(3, 16, 2), torch.rand(3, 16), 0.75)
    assert v.shape == (3, 4, 2) and m.sum(1).tolist() == [12.0] * 3  # per sample, int(16 * 0.25) kept


def test_patchify_layout_and_inverse():
    c, h, w = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    imgs = (c * 100 + h * 10 + w).float()[None]  # [1, 3, 4, 4], value = channel*100 + row*10 + col
    p = patchify(imgs, 2)
    assert p.shape == (1, 4, 12)
    # patch 1 is row 0, col 1 (pixels rows 0-1, cols 2-3), each pixel's channels together (MAE's nhwpqc)
    assert p[0, 1, :6].tolist() == [2.0, 102.0, 202.0, 3.0, 103.0, 203.0]
    assert torch.equal(unpatchify(p, 2, 2, 2), imgs)


def test_mae_loss_on_hidden_patches_only():
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    assert mae_loss(pred, target, torch.tensor([[0.0, 1.0]]), norm_pix=False).item() == pytest.approx(9.0)
    assert mae_loss(pred, target, torch.tensor([[1.0, 1.0]]), norm_pix=False).item() == pytest.approx(5.0)
    # normalised pixels: patch [1, 3] -> mean 2, unbiased var 2 -> [-1, 1] / sqrt(2)
    t = torch.tensor([[[1.0, 3.0]]])
    assert mae_loss(torch.zeros(1, 1, 2), t, torch.ones(1, 1)).item() == pytest.approx(0.5, rel=1e-5)
    assert mae_loss(t.sub(2).div(math.sqrt(2)), t, torch.ones(1, 1)).item() == pytest.approx(0.0, abs=1e-6)


def test_sincos_position_embeddings_known_values():
    e = sincos_pos_embed(4, 1, 2)  # 1 row, 2 columns: the column in the first half, the row in the second
    expected = [[0, 0, 0, 0], [0, 1, 0, 1], [math.sin(1), math.cos(1), 0, 1]]
    torch.testing.assert_close(e, torch.tensor(expected, dtype=torch.float32))
    e = sincos_pos_embed(8, 2, 3, cls_token=False)
    omega = [1.0, 0.01]
    row, col = 1, 2
    want = [math.sin(col * o) for o in omega] + [math.cos(col * o) for o in omega]
    want += [math.sin(row * o) for o in omega] + [math.cos(row * o) for o in omega]
    torch.testing.assert_close(e[row * 3 + col], torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_encoder_blocks_on_a_subset_of_tokens():
    torch.manual_seed(0)
    enc = create_encoder("vit_test").eval()
    x = torch.randn(2, 3, 32, 32)
    tokens, _ = enc.prepare_tokens(x)
    torch.testing.assert_close(enc.run_blocks(tokens), enc(x).tokens)  # all tokens: the normal forward
    assert enc.run_blocks(tokens[:, :5]).shape == (2, 5, 64)  # any subset (MAE's visible patches)


def test_decoder_uses_mae_names():
    dec = MAEDecoder(64, 4, 8, dim=32, depth=2, num_heads=2)
    block = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    names = {
        "decoder_embed.weight",
        "decoder_embed.bias",
        "mask_token",
        "decoder_pos_embed",
        "decoder_norm.weight",
        "decoder_norm.bias",
        "decoder_pred.weight",
        "decoder_pred.bias",
    }
    names |= {f"decoder_blocks.{i}.{b}" for i in range(2) for b in block}
    assert set(dec.state_dict()) == names
    assert dec.decoder_pred.out_features == 8 * 8 * 3 and not dec.decoder_pos_embed.requires_grad


def test_mae_parameter_groups_as_mae():
    from visionfm.pretrain.encoders import build_task

    task = build_task(
        pretrain_config(
            method="mae",
            data=["x"],
            arch="vit_test",
            global_size=32,
            decoder_depth=1,
            decoder_embed_dim=32,
            decoder_num_heads=2,
        )
    )
    decay, no_decay = task.param_groups()
    names = {id(p): n for n, p in task.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"encoder.cls_token", "decoder.mask_token", "decoder.decoder_pred.weight"} <= decayed
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in no_decay["params"])
    trained = decayed | {names[id(p)] for p in no_decay["params"]}
    assert "encoder.pos_embed" not in trained and "encoder.mask_token" not in trained  # fixed / unused


def test_method_preset_under_the_users_settings(tmp_path):
    cfg = pretrain_config(method="mae", data=["x"])
    t = cfg.train
    assert (t.lr, t.lr_base_batch, t.weight_decay, t.weight_decay_end, t.warmup_epochs, tuple(t.betas)) == (
        1.5e-3,
        256,
        0.05,
        None,
        40.0,
        (0.9, 0.95),
    )
    assert cfg.global_scale == [0.2, 1.0] and cfg.imagenet_stats and cfg.train.clip_grad is None
    f = tmp_path / "c.yaml"
    f.write_text("method: mae\ndata: [x]\ntrain:\n  lr: 0.001\n")
    cfg = pretrain_config(f, weight_decay=0.1)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.warmup_epochs) == (1e-3, 0.1, 40.0)
    ibot = pretrain_config(data=["x"])
    assert (ibot.train.lr, ibot.train.weight_decay_end, tuple(ibot.train.betas)) == (7.5e-5, 0.4, (0.9, 0.999))
    assert cfg.mae_mask_ratio(["Fundus"]) == 0.75 and cfg.mae_mask_ratio(["OCT"]) == 0.85
    with pytest.raises(ValueError, match="different MAE mask ratios"):
        cfg.mae_mask_ratio(["Fundus", "OCT"])
    assert pretrain_config(method="mae", data=["x"], mask_ratio=0.6).mae_mask_ratio(["Fundus", "OCT"]) == 0.6


def test_tiny_mae_run_learns_exports_and_draws(retina_folder, tmp_path):
    run = pretrain(tiny_config([retina_folder], tmp_path / "run", method="mae", epochs=4, lr=0.1))
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {"loss", "mask_ratio", "feature_std", "effective_rank"} <= set(rows[0])
    assert rows[0]["mask_ratio"] == 0.75
    first, last = sum(r["loss"] for r in rows[:4]) / 4, sum(r["loss"] for r in rows[-4:]) / 4
    assert last < 0.9 * first  # reconstruction of hidden patches improves
    enc = visionfm.load_encoder(run / ENCODER_FILE)
    assert enc.info.modality == "Fundus" and enc.info.mean == (0.485, 0.456, 0.406)  # ImageNet, as RETFound
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)["task"]
    for k, v in load_file(run / ENCODER_FILE).items():
        torch.testing.assert_close(v, state[f"encoder.{k}"])  # the export is the encoder
    assert (run / "reconstruction.png").stat().st_size > 1000 and (run / "health.json").is_file()
    saved = yaml.safe_load((run / "pretrain.yaml").read_text())
    assert saved["method"] == "mae" and saved["train"]["betas"] == [0.9, 0.95]
    from visionfm.explain import load_pretraining_checkpoint

    ckpt_enc = load_pretraining_checkpoint(run / "checkpoint_last.pth")  # the run-checkpoint reader knows MAE
    torch.testing.assert_close(ckpt_enc.state_dict()["pos_embed"], enc.state_dict()["pos_embed"])
    named = visionfm.load_encoder(run / "checkpoint_last.pth", modality="Fundus")  # visionfm-run format
    assert named.info.format == "visionfm-run"


def _mae_file(path, decoder=True):
    """A tiny checkpoint in the RETFound / MAE release layout: {"model": encoder + decoder tensors, MAE names}."""
    torch.manual_seed(7)
    enc = create_encoder("vit_test")
    sd = {k: v for k, v in enc.state_dict().items() if k != "mask_token"}  # MAE's encoder has no mask token
    if decoder:
        sd.update(MAEDecoder(64, 4, 8, dim=32, depth=1, num_heads=2).state_dict())
    torch.save({"model": sd}, path)
    return sd


def test_continued_pretraining_keeps_the_files_decoder(retina_folder, tmp_path, caplog):
    sd = _mae_file(tmp_path / "mae.pth")
    with caplog.at_level(logging.INFO, logger="visionfm.pretrain"):
        run = pretrain(
            tiny_config(
                [retina_folder],
                tmp_path / "run",
                method="mae",
                max_steps=1,
                lr=0.0,
                init_from=str(tmp_path / "mae.pth"),
            )
        )
    assert any("continuing the MAE decoder" in r.getMessage() for r in caplog.records)
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)["task"]
    for k in ("decoder_embed.weight", "mask_token", "decoder_blocks.0.attn.qkv.weight", "decoder_pred.bias"):
        torch.testing.assert_close(state[f"decoder.{k}"], sd[k])  # lr 0: exactly the file's decoder
    torch.testing.assert_close(state["encoder.blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"])
    _mae_file(tmp_path / "enc_only.pth", decoder=False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionfm.pretrain"):
        pretrain(
            tiny_config(
                [retina_folder], tmp_path / "run2", method="mae", max_steps=1, init_from=str(tmp_path / "enc_only.pth")
            )
        )
    assert any("has no MAE decoder: the MAE decoder starts fresh" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="decoder does not fit.*--decoder-embed-dim"):
        pretrain(
            tiny_config(
                [retina_folder],
                tmp_path / "run3",
                method="mae",
                max_steps=1,
                decoder_embed_dim=64,
                init_from=str(tmp_path / "mae.pth"),
            )
        )


def test_cli_mae_with_mask_ratio(retina_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "pretrain",
        "--method",
        "mae",
        "--data",
        str(retina_folder),
        "--arch",
        "vit_test",
        "--global-size",
        "32",
        "--decoder-embed-dim",
        "32",
        "--decoder-depth",
        "1",
        "--decoder-num-heads",
        "2",
        "--batch-size",
        "8",
        "--max-steps",
        "2",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--log-every",
        "1",
        "--mask-ratio",
        "0.6",
        "--output",
        str(out),
    ]
    assert main(args) == 0
    assert f"encoder: {out / ENCODER_FILE}" in capsys.readouterr().out
    row = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert row["mask_ratio"] == pytest.approx(10 / 16)  # int(16 * 0.4) = 6 of 16 patches visible
    assert isinstance(visionfm.load_encoder(out / ENCODER_FILE), VisionTransformer)
    assert main([*args[:-1], str(tmp_path / "bad"), "--mask-ratio", "1.5"]) == 2
    assert "mask_ratio must be in (0, 1)" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_mae_on_real_images_killed_and_resumed(drive_folder, retina_folder, tmp_path):
    """2 processes (gloo) of MAE on real photographs: SIGKILL of launcher and workers, exact resume, export read."""
    from .test_run import _args, _no_encoder

    def args(out):
        base = _args(retina_folder, out, 8)[2:]
        i = base.index("--local-crops")
        del base[i : i + 4]  # --local-crops 1 --local-size 16: iBOT settings
        return [
            "pretrain",
            *base,
            "--method",
            "mae",
            "--decoder-embed-dim",
            "32",
            "--decoder-depth",
            "1",
            "--decoder-num-heads",
            "2",
            "--data",
            str(retina_folder),
            f"Fundus={drive_folder}",
            "--load-size",
            "64",
            "--num-workers",
            "1",
            "--lr",
            "0.05",
        ]

    kill_and_resume(args, tmp_path, "checkpoint_0000000[3-7].pth", 2, 29571, _no_encoder)
    rows = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert max(r["lr"] for r in rows) == pytest.approx(0.05 * 16 / 256)  # per 256 images of the global batch 2 x 8
    a, b = load_file(tmp_path / "full" / ENCODER_FILE), load_file(tmp_path / "killed" / ENCODER_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, with each rank's RNG restored
    sa = torch.load(tmp_path / "full" / "checkpoint_last.pth", weights_only=True)["task"]
    sb = torch.load(tmp_path / "killed" / "checkpoint_last.pth", weights_only=True)["task"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the decoder too
    assert visionfm.load_encoder(tmp_path / "full" / ENCODER_FILE).cfg.embed_dim == 64
    assert (tmp_path / "killed" / "reconstruction.png").is_file()
