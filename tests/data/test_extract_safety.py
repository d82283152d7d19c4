"""`extract` checks before work, locks its output, survives a full disk cleanly and records split/preprocessing."""

import errno
import os

import numpy as np
import pytest
from PIL import Image

from visionfm.cli import main
from visionfm.data import writer
from visionfm.data.writer import OutputLock
from visionfm.errors import UserError
from visionfm.features import extract_features, load_features

KW = dict(input_size=32, batch_size=4, num_workers=0, progress=False, n_last_blocks=2)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    "flag,value,msg",
    [
        ("--input-size", "0", "--input-size must be a positive integer"),
        ("--input-size", "-32", "--input-size must be a positive integer"),
        ("--batch-size", "0", "--batch-size must be a positive integer"),
        ("--n-last-blocks", "3", "exceeds the encoder's depth"),
    ],
)
def test_bad_sizes_are_errors(tmp_path, tiny_weights, image_folder, capsys, flag, value, msg):
    args = [
        "extract",
        "--weights",
        str(tiny_weights),
        "--data",
        str(image_folder),
        "--output",
        str(tmp_path / "f.safetensors"),
        "--input-size",
        "32",
        "--num-workers",
        "0",
        flag,
        value,
    ]
    assert main(args) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "f.safetensors").exists() and _leftovers(tmp_path) == []


def test_output_checked_before_any_image_is_read(tmp_path, tiny_encoder):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corrupt.png").write_bytes(b"not a png")  # reading it would fail: the output error must come first
    (tmp_path / "out.safetensors").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        extract_features(tiny_encoder, data, tmp_path / "out.safetensors", **KW)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        extract_features(tiny_encoder, data, tmp_path / "file" / "f.safetensors", **KW)


def test_unwritable_folder_is_refused_first(tmp_path, tiny_encoder, image_folder, monkeypatch):
    monkeypatch.setattr(writer.os, "access", lambda path, mode: False)  # as a non-root user without write access
    with pytest.raises(UserError, match="no permission to write in"):
        extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)


def test_second_writer_is_refused_and_first_output_intact(tmp_path, tiny_encoder, image_folder):
    out = tmp_path / "f.safetensors"
    with (
        OutputLock(out),
        pytest.raises(
            UserError,  # another extraction running on the same output
            match=f"another extraction \\(pid {os.getpid()}\\) is writing",
        ),
    ):
        extract_features(tiny_encoder, image_folder, out, **KW)
    assert not out.exists()
    extract_features(tiny_encoder, image_folder, out, **KW)
    assert load_features(out).cls.shape == (6, 128) and _leftovers(tmp_path) == []


def test_disk_full_at_preallocation_is_clean(tmp_path, tiny_encoder, image_folder, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "posix_fallocate", full)
    with pytest.raises(UserError, match="no space left on device while writing; the partial file was removed"):
        extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "f.safetensors").exists()


def test_disk_full_while_writing_rows_is_clean(tmp_path, tiny_encoder, image_folder, monkeypatch):
    real = os.pwrite
    calls = {"n": 0}

    def flaky(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 2:  # the header and the first rows succeed, then the disk fills
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(writer.os, "posix_fallocate", lambda fd, o, n: None)
    monkeypatch.setattr(writer.os, "pwrite", flaky)
    with pytest.raises(UserError, match="no space left on device"):
        extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)
    assert _leftovers(tmp_path) == []


def test_failure_midway_leaves_nothing(tmp_path, tiny_encoder, image_folder):
    (image_folder / "b" / "9.png").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="9.png"):
        extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "f.safetensors").exists()


def test_split_and_preprocessing_recorded(tmp_path, tiny_encoder):
    for split in ("training", "test"):
        (tmp_path / split).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / split / "1.png")
        (tmp_path / f"{split}_labels.txt").write_text(f"{split}/1.png;1\n")
    out = extract_features(
        tiny_encoder, tmp_path, tmp_path / "f.safetensors", split="test", **KW, interpolation="bicubic"
    )
    fs = load_features(out)
    assert fs.meta["split"] == "test" and fs.paths == ["test/1.png"] and fs.meta["interpolation"] == "bicubic"


def test_ctrl_c_leaves_nothing_and_output_gets_umask_mode(tmp_path, tiny_encoder, image_folder, monkeypatch):
    import visionfm.features as features

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(features, "encode_batch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "f.safetensors").exists()
    old = os.umask(0o027)
    try:
        out = extract_features(tiny_encoder, image_folder, tmp_path / "f.safetensors", **KW)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
