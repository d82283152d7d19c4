"""``explain`` end to end: PNG grids, raw maps, evolution over checkpoints, the CLI, and a real image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import DATA, FIXTURES, require
from visionfm.checkpoints import save_encoder
from visionfm.cli import main
from visionfm.explain import attention_evolution, explain, explain_images
from visionfm.models import create_encoder


@pytest.fixture
def second_weights(tmp_path, tiny_encoder):
    """A differently initialised tiny encoder (a 'later checkpoint')."""
    torch.manual_seed(1)
    enc = create_encoder("vit_test").eval()
    enc.info = tiny_encoder.info
    path = tmp_path / "later.safetensors"
    save_encoder(enc, path)
    return path


def test_explain_writes_grid_and_maps(tmp_path, tiny_weights, image_folder):
    written = explain(tiny_weights, image_folder, tmp_path / "out", input_size=48)
    grid = np.array(Image.open(written["attention_grid.png"]))
    assert grid.ndim == 3 and grid.shape[0] > 6 * 100  # six image rows
    maps = np.load(written["attention.npz"])
    assert maps["heads"].shape == (6, 2, 6, 6) and maps["mean"].shape == (6, 6, 6)
    np.testing.assert_allclose(maps["rollout"].reshape(6, -1).sum(1), 1, rtol=1e-5)
    assert [p.split("/")[-1] for p in maps["paths"]] == ["0.png", "1.png", "2.png"] * 2


def test_explain_chunks_many_images(tmp_path, tiny_encoder, image_folder):
    written = explain(tiny_encoder, image_folder, tmp_path, rows_per_grid=4, heads=False)
    assert {"attention_grid_001.png", "attention_grid_002.png"} <= set(written)


def test_explain_arrays_and_errors(tiny_encoder, tmp_path):
    arrays = [np.zeros((20, 30, 3), np.uint8), np.full((50, 40, 3), 200, np.uint8)]
    expl = explain_images(tiny_encoder, arrays, progress=False)
    assert [e.source for e in expl] == ["array0", "array1"] and expl[0].image.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        explain_images(tiny_encoder, arrays, input_size=36)
    with pytest.raises(FileNotFoundError):
        explain_images(tiny_encoder, tmp_path / "missing.png")


def test_evolution_one_row_per_checkpoint(tmp_path, tiny_weights, second_weights, image_folder):
    images = sorted(image_folder.glob("a/*.png"))
    out = attention_evolution([tiny_weights, second_weights], images, tmp_path / "evo.png", labels=["ep 1", "ep 2"])
    arr = np.array(Image.open(out))
    one = attention_evolution([tiny_weights], images, tmp_path / "one.png")
    assert arr.shape[0] > np.array(Image.open(one)).shape[0] + 100  # one more row
    with pytest.raises(ValueError, match="labels"):
        attention_evolution([tiny_weights], images, tmp_path / "x.png", labels=["a", "b"])


def test_cli_explain(tmp_path, tiny_weights, second_weights, image_folder, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "explain",
            "--weights",
            str(tiny_weights),
            str(second_weights),
            "--images",
            str(image_folder / "a"),
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert (out / "attention_grid.png").is_file() and (out / "attention_evolution.png").is_file()
    assert "attention_evolution.png" in capsys.readouterr().out
    rc = main(
        [
            "explain",
            "--weights",
            str(tiny_weights),
            "--images",
            str(image_folder),
            "--output",
            str(out),
            "--input-size",
            "30",
        ]
    )
    assert rc == 2 and "multiple of the patch size" in capsys.readouterr().err


def test_explain_real_image_with_official_checkpoint(tmp_path):
    """A real DRIVE fundus image through the official-format checkpoint, at two input sizes."""
    from visionfm.checkpoints import load_encoder

    img = require(DATA / "DRIVE" / "test" / "images" / "01_test.png")
    enc = load_encoder(require(FIXTURES / "checkpoint.pth"))
    written = explain(enc, [img], tmp_path, input_size=448)
    maps = np.load(written["attention.npz"])
    assert maps["heads"].shape == (1, 2, 28, 28)
    assert Image.open(written["attention_grid.png"]).size[0] > 500
    # on a fundus photograph the merged map is not uniform: the black border and the retina differ
    e = explain_images(enc, [img], input_size=224, progress=False)[0]
    fov = torch.from_numpy(e.image.mean(-1) > 0.1).float()[None, None]
    fov_grid = torch.nn.functional.avg_pool2d(fov, 16)[0, 0] > 0.99
    assert fov_grid.any() and (~fov_grid).any()
    assert float(e.mean[fov_grid].mean()) != pytest.approx(float(e.mean[~fov_grid].mean()), rel=1e-3)


def test_collect_images_mixes_files_and_folders(image_folder, tmp_path):
    from visionfm.explain import collect_images

    got = collect_images([image_folder / "b" / "0.png", image_folder / "a"])
    assert [p.relative_to(image_folder).as_posix() for p in got] == ["b/0.png", "a/0.png", "a/1.png", "a/2.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        collect_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no images given"):
        collect_images([])


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A real (tiny) `visionfm pretrain` run on fundus phantoms, keeping a checkpoint every 2 steps."""
    from visionfm.pretrain import pretrain, pretrain_config
    from visionfm.toydata import make_dataset

    root = tmp_path_factory.mktemp("pretrain")
    data = make_dataset("fundus-dr", root / "toy", n=20, size=32, progress=False)
    cfg = pretrain_config(
        data=[str(data.root / "training")],
        modality="Fundus",
        arch="vit_test",
        output=str(root / "run"),
        max_steps=4,
        epochs=4,
        batch_size=4,
        global_size=32,
        local_crops=0,
        out_dim=64,
        patch_out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        checkpoint_every=2,
        keep_last=10,
        warmup_epochs=0.1,
        device="cpu",
        num_workers=0,
        progress=False,
    )
    return pretrain(cfg), data


def test_pretraining_checkpoints_in_training_order(pretrain_run):
    from visionfm.checkpoints import load_encoder
    from visionfm.explain import load_pretraining_checkpoint, pretraining_checkpoints

    run, _ = pretrain_run
    ckpts = pretraining_checkpoints(run)
    steps = [c.step for c in ckpts]
    assert steps == sorted(steps) and steps[0] == 2 and steps[-1] == 4 and ckpts[0].label == "step 2"
    first, last = (load_pretraining_checkpoint(c.path) for c in (ckpts[0], ckpts[-1]))
    assert last.cfg.num_heads == 2 and last.info.modality == "Fundus"  # the run's arch, not a guess from tensors
    exported = load_encoder(run / "encoder.safetensors")
    for k, v in exported.state_dict().items():  # the last checkpoint's teacher is the exported encoder
        torch.testing.assert_close(last.state_dict()[k], v, atol=0, rtol=0)
    assert not torch.equal(first.blocks[0].attn.qkv.weight, last.blocks[0].attn.qkv.weight)  # it trained
    generic = load_encoder(ckpts[0].path, modality="Fundus", arch="vit_test")  # the 'visionfm-run' format
    assert generic.info.format == "visionfm-run"
    torch.testing.assert_close(generic.state_dict()["pos_embed"], first.state_dict()["pos_embed"])


def test_multi_modality_run_checkpoint_needs_a_modality(pretrain_run, tmp_path):
    import shutil

    import yaml

    from visionfm.explain import load_pretraining_checkpoint

    run, data = pretrain_run
    cfg = yaml.safe_load((run / "pretrain.yaml").read_text())
    cfg["data"] = cfg["data"] + [f"OCT={cfg['data'][0]}"]  # the same run, recorded as over Fundus and OCT
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(run / "checkpoint_last.pth", tmp_path / "checkpoint_last.pth")
    with pytest.raises(ValueError, match="several modalities"):
        load_pretraining_checkpoint(tmp_path / "checkpoint_last.pth")
    enc = load_pretraining_checkpoint(tmp_path / "checkpoint_last.pth", modality="oct")
    assert enc.info.modality == "OCT" and enc.info.mean[0] == pytest.approx(0.2109193)


def test_evolution_over_a_pretraining_run(pretrain_run, tmp_path, capsys):
    from visionfm.explain import pretraining_checkpoints

    run, data = pretrain_run
    images = sorted((data.root / "test").glob("*.png"))[:2]
    n = len(pretraining_checkpoints(run))
    out = attention_evolution(run, images, tmp_path / "evo.png")
    one = attention_evolution([pretraining_checkpoints(run)[0].path], images, tmp_path / "one.png")
    h_all, h_one = np.array(Image.open(out)).shape[0], np.array(Image.open(one)).shape[0]
    assert h_all > h_one + (n - 1) * 100  # one row per checkpoint
    rc = main(
        [
            "explain",
            "--weights",
            str(run),
            "--images",
            *map(str, images),
            "--output",
            str(tmp_path / "cli"),
            "--no-heads",
        ]
    )
    assert rc == 0 and (tmp_path / "cli" / "attention_evolution.png").is_file()
    assert "attention_evolution.png" in capsys.readouterr().out
    assert (
        main(["explain", "--weights", str(data.root), "--images", str(images[0]), "--output", str(tmp_path / "x")]) == 2
    )
    assert "not a pretraining run folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="2 labels for 1 checkpoints"):
        attention_evolution([pretraining_checkpoints(run)[0].path], images, tmp_path / "y.png", labels=["a", "b"])
