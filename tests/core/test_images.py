"""Image files of every supported kind become RGB arrays; bad files get errors naming them."""

import numpy as np
import pytest
from PIL import Image

from visionfm.data import ImageReadError, Preprocess, read_image, resize_image


def test_png_jpeg_bmp_gif_rgb(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for ext in ("png", "bmp", "tif"):
        Image.fromarray(arr).save(tmp_path / f"a.{ext}")
        np.testing.assert_array_equal(read_image(tmp_path / f"a.{ext}"), arr)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (20, 30, 3)
    Image.fromarray(arr).convert("P").save(tmp_path / "a.gif")
    assert read_image(tmp_path / "a.gif").shape == (20, 30, 3)


def test_grey_is_replicated_and_rgba_composited_on_black(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and (out == grey[..., None]).all()
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 51
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out[0, 0, 0] == 200 and out[0, 1, 0] == 0 and out[1, 0, 0] == 40


def test_16bit_tiff_keeps_precision(tmp_path):
    arr = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(arr).save(tmp_path / "d.tif")
    out = read_image(tmp_path / "d.tif")
    assert out.dtype == np.float32 and out.shape == (8, 8, 3)
    np.testing.assert_allclose(out[..., 0], arr / 65535.0, atol=1e-6)
    assert resize_image(out, (4, 4)).shape == (4, 4, 3)


def test_dicom(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    px = np.arange(100, dtype=np.uint16).reshape(10, 10) * 40
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 10, 10, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = px.tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    out = read_image(tmp_path / "x.dcm")
    assert out.shape == (10, 10, 3) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0 and out[0, 1, 0] > out[0, 0, 0]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match="unsupported image type"):
        read_image(tmp_path / "notes.txt")


def test_preprocess_normalises():
    img = np.full((10, 12, 3), 255, dtype=np.uint8)
    x = Preprocess(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(img)
    assert x.shape == (3, 8, 8)
    np.testing.assert_allclose(x.numpy(), 2.0, atol=1e-6)
