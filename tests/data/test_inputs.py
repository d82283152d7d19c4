"""Bad and awkward inputs (issue 14): link loops, decompression bombs, CSV encodings and ragged rows."""

import os

import numpy as np
import pytest
from PIL import Image

from visionfm.data import ImageReadError, list_images, read_image, scan
from visionfm.data.images import decode_image, pixel_limit
from visionfm.errors import UserError


def _img(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(path)
    return path


def test_symlink_loops_are_walked_once_and_files_counted_once(tmp_path):
    _img(tmp_path / "a" / "x.png")
    os.symlink(".", tmp_path / "a" / "loop")  # ln -s . loop, twice: never finishes with naive followlinks
    os.symlink(".", tmp_path / "a" / "loop2")
    os.symlink("..", tmp_path / "a" / "up")
    os.symlink(tmp_path / "a" / "x.png", tmp_path / "alias.png")  # one file reached by two paths
    assert list_images(tmp_path) == [tmp_path / "a" / "x.png"]
    assert len(scan(str(tmp_path))) == 1  # a str is one path


def test_decompression_bomb_names_file_and_limit(tmp_path, monkeypatch):
    path = _img(tmp_path / "big.png", (300, 400))
    monkeypatch.setenv("VISIONFM_MAX_PIXELS", "100000")
    with pytest.raises(ImageReadError, match=r"big.png: 120,000 pixels exceed the limit of 100,000"):
        read_image(path)
    assert read_image(path, max_pixels=200_000).shape == (300, 400, 3)
    with pytest.raises(ImageReadError, match="upload.png"):
        decode_image(path.read_bytes(), "upload.png")
    monkeypatch.setenv("VISIONFM_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="VISIONFM_MAX_PIXELS='lots'"):
        pixel_limit()


def test_pil_bomb_error_is_an_image_read_error(tmp_path, monkeypatch):
    """Above PIL's own limit PIL raises DecompressionBombError (not an OSError): it becomes ImageReadError."""
    path = _img(tmp_path / "b.png", (64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"b.png: decompression bomb refused by PIL"):
        read_image(path)


def test_pretraining_skips_a_bomb_like_a_corrupt_image(tmp_path, monkeypatch):
    from visionfm.pretrain.data import _open_rgb

    path = _img(tmp_path / "big.jpg", (300, 400))
    monkeypatch.setenv("VISIONFM_MAX_PIXELS", "1000")
    with pytest.raises(ImageReadError, match="big.jpg"):
        _open_rgb(path, 64)


def test_csv_with_bom_is_accepted(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes("path,label\na.png,1\n".encode("utf-8-sig"))
    coll = scan(tmp_path / "m.csv")
    assert coll.label_names == ["label"] and coll.samples[0].label == (1.0,)


def test_latin1_csv_is_named_with_line(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes("path,label,site\na.png,1,Zürich\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"m.csv, line 2: not UTF-8 text \(byte 0xfc\)"):
        scan(tmp_path / "m.csv")


def test_ragged_csv_row_is_named(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,1\na.png,1,extra\n")
    with pytest.raises(UserError, match=r"m.csv, line 3: 3 fields, but the header has 2"):
        scan(tmp_path / "m.csv")


def test_folder_given_as_image_is_named(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path / "d.png")


def test_jpeg_draft_decodes_at_reduced_size(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((400, 600, 3), 128, dtype=np.uint8)).save(path)
    assert read_image(path, draft=100).shape == (100, 150, 3)  # 4x DCT downscale, both sides still >= 100
    assert read_image(path).shape == (400, 600, 3)
