"""DICOM test matrix: SOP classes, photometric interpretations, transfer syntaxes, frames, laterality, spacing."""

import numpy as np
import pytest

pytest.importorskip("pydicom")

from tests.data.dicom_factory import OPT, make_dicom
from visionfm.data import ImageReadError, decode_image, read_dicom, read_image
from visionfm.features import extract_features, load_features

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)
_yy, _xx = np.meshgrid(np.linspace(0, 255, 64), np.linspace(0, 255, 64), indexing="ij")
SMOOTH = np.stack([_yy, _xx, (_yy + _xx) / 2], -1).astype(np.uint8)  # JPEG-friendly content
VOLUME = RNG.integers(0, 4000, (3, 64, 64)).astype(np.uint16)  # 12-bit OCT-like B-scans


def _plugin(syntax):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

    uid = {"rle": RLELossless, "j2k": JPEG2000Lossless, "jpeg": JPEGBaseline8Bit}.get(syntax)
    if uid is not None and not get_decoder(uid).is_available:
        pytest.skip(f"no decoder plugin for {uid.name}")


@pytest.mark.parametrize(
    "syntax,photometric,tol",
    [
        ("explicit", "RGB", 0),
        ("explicit", "YBR_FULL", 1),
        ("rle", "RGB", 0),
        ("j2k", "RGB", 0),
        ("jpeg", "YBR_FULL_422", 8),
    ],
)
def test_colour_photographs(tmp_path, syntax, photometric, tol):
    _plugin(syntax)
    src = SMOOTH if syntax == "jpeg" else RGB
    path = make_dicom(tmp_path / "op.dcm", src, photometric, syntax, laterality="L", pixel_spacing=(0.01, 0.02))
    d = read_dicom(path)
    assert d.frames.shape == (1, 64, 64, 3) and d.frames.dtype == np.uint8
    assert np.abs(d.frames[0].astype(int) - src.astype(int)).max() <= tol
    assert d.laterality == "L" and d.pixel_spacing == (0.01, 0.02) and d.modality == "OP"
    assert d.sop_class == "Ophthalmic Photography 8 Bit Image Storage"
    np.testing.assert_array_equal(read_image(path), d.frames[0])


def test_monochrome1_is_inverted_and_monochrome2_kept(tmp_path):
    grey = SMOOTH[..., 0]
    m2 = read_image(make_dicom(tmp_path / "m2.dcm", grey, "MONOCHROME2"))
    m1 = read_image(make_dicom(tmp_path / "m1.dcm", grey, "MONOCHROME1"))
    np.testing.assert_array_equal(m2[..., 0], grey)  # an 8-bit grey DICOM reads as its PNG would
    np.testing.assert_array_equal(m1[..., 0], 255 - grey)


@pytest.mark.parametrize("syntax", ["explicit", "rle", "j2k"])
def test_multiframe_oct_volume_with_functional_groups(tmp_path, syntax):
    _plugin(syntax)
    path = make_dicom(
        tmp_path / "opt.dcm",
        VOLUME,
        "MONOCHROME2",
        syntax,
        sop_class=OPT,
        laterality="R",
        functional_groups=True,
        pixel_spacing=(0.0039, 0.0115),
        slice_spacing=0.12,
    )
    d = read_dicom(path)
    ref = (VOLUME - VOLUME.min()) / (VOLUME.max() - VOLUME.min())  # one window over the whole volume
    assert d.frames.shape == (3, 64, 64, 3) and d.frames.dtype == np.float32
    np.testing.assert_allclose(d.frames[..., 0], ref, atol=1e-6)
    assert (d.laterality, d.pixel_spacing, d.slice_spacing) == ("R", (0.0039, 0.0115), 0.12)
    assert d.sop_class == "Ophthalmic Tomography Image Storage" and d.modality == "OPT"
    with pytest.raises(ImageReadError, match="opt.dcm: multi-frame DICOM \\(3 frames.*--volumes"):
        read_image(path)


def test_bytes_and_uploads(tmp_path):
    path = make_dicom(tmp_path / "op.dcm", RGB, "RGB")
    np.testing.assert_array_equal(read_dicom(path.read_bytes()).frames[0], RGB)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "scan.dcm"), RGB)
    with pytest.raises(ImageReadError, match="upload.dcm: not a DICOM file"):
        read_dicom(b"garbage" * 10, name="upload.dcm")


def test_unsupported_syntax_names_file_and_syntax(tmp_path):
    path = make_dicom(tmp_path / "video.dcm", RGB[..., 0], "MONOCHROME2", "mpeg4")
    with pytest.raises(
        ImageReadError,
        match=r"video.dcm: transfer syntax MPEG-4 AVC/H.264.*"
        r"1\.2\.840\.10008\.1\.2\.4\.102",
    ):
        read_image(path)


def test_missing_plugin_names_file_syntax_and_install(tmp_path, monkeypatch):
    import pydicom.pixels

    path = make_dicom(tmp_path / "j.dcm", SMOOTH, "YBR_FULL_422", "jpeg")

    class _Missing:
        is_available = False
        missing_dependencies = ("pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1",)

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: _Missing())
    with pytest.raises(
        ImageReadError,
        match=r"j.dcm: transfer syntax JPEG Baseline \(Process 1\).*needs a "
        r"pixel-data plugin that is not installed \(pylibjpeg",
    ):
        read_image(path)


def test_extraction_records_laterality_and_spacing(tmp_path, tiny_encoder):
    folder = tmp_path / "dicoms"
    folder.mkdir()
    make_dicom(folder / "a.dcm", RGB, "RGB", laterality="R", pixel_spacing=(0.005, 0.005))
    make_dicom(folder / "b.dcm", RGB, "RGB", "rle", laterality="L")
    fs = load_features(
        extract_features(
            tiny_encoder,
            folder,
            tmp_path / "f.safetensors",
            input_size=32,
            n_last_blocks=1,
            num_workers=0,
            progress=False,
        )
    )
    import json

    facts = json.loads(fs.meta["dicom"])
    assert facts["a.dcm"]["laterality"] == "R" and facts["a.dcm"]["pixel_spacing"] == [0.005, 0.005]
    assert facts["b.dcm"]["laterality"] == "L" and facts["b.dcm"]["transfer_syntax"] == "RLE Lossless"
