"""Label files read strictly (errors name file and line) and feature caches checked against their encoder."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from tests.recognition.conftest import extract
from visionfm.recognition.data import EncoderRef, FeatureDataset, load_table
from visionfm.recognition.labels import LabelSpec, read_labels
from visionfm.recognition.schema import OFFICIAL_13, LabelSchema


@pytest.fixture
def folder(tmp_path):
    """Three tiny images in a vfm-style folder."""
    from PIL import Image

    (tmp_path / "training").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "training" / f"{i}.png")
    return tmp_path


def test_vfm_classify_ok_and_wrong_label_count(folder):
    f = folder / "training_labels.txt"
    f.write_text("# comment\ntraining/0.png;0\ntraining/1.png;2\n")
    t = read_labels(f, LabelSpec("classify"))
    assert [r.values for r in t.rows.values()] == [(0.0,), (2.0,)]
    f.write_text("training/0.png;0\ntraining/1.png;1, 0\n")
    with pytest.raises(ValueError, match=r"training_labels.txt, line 2: expected 1 class index, got 2"):
        read_labels(f, LabelSpec("classify"))


def test_vfm_multilabel_count_missing_image_and_bad_value(folder):
    f = folder / "training_labels.txt"
    row = ", ".join(["0"] * 13)
    f.write_text(f"training/0.png;{row}\ntraining/1.png;0, 1\n")
    with pytest.raises(ValueError, match=r"line 2: expected 13 outputs"):
        read_labels(f, LabelSpec("multilabel", schema=OFFICIAL_13))
    f.write_text(f"training/0.png;{row}\ntraining/9.png;{row}\n")
    with pytest.raises(FileNotFoundError, match=r"line 2: image .*9.png not found"):
        read_labels(f, LabelSpec("multilabel", schema=OFFICIAL_13))
    f.write_text(f"training/0.png;{row.replace('0', '2', 1)}\n")
    with pytest.raises(ValueError, match=r"line 1: multi-label values must be 0, 1 or missing"):
        read_labels(f, LabelSpec("multilabel", schema=OFFICIAL_13))
    f.write_text(f"training/0.png;{row.replace('0', 'nan', 1)}\n")  # missing is fine for multi-label
    t = read_labels(f, LabelSpec("multilabel", schema=OFFICIAL_13))
    assert math.isnan(t.rows["training/0.png"].values[0])


def test_nan_target_is_an_error_outside_multilabel(folder):
    f = folder / "training_labels.txt"
    f.write_text("training/0.png;1\ntraining/1.png;nan\n")
    with pytest.raises(ValueError, match=r"line 2: NaN/missing target"):
        read_labels(f, LabelSpec("classify"))
    f.write_text("training/0.png;1.5, nan\n")
    with pytest.raises(ValueError, match=r"line 1: NaN/missing target"):
        read_labels(f, LabelSpec("regress", names=["a", "b"]))


def test_csv_class_names_and_unknown_name(folder):
    f = folder / "labels.csv"
    f.write_text("path,label,patient\ntraining/0.png,NPDR,p1\ntraining/1.png,0,p2\ntraining/2.png,PDR,p2\n")
    spec = LabelSpec("classify", names=["0", "NPDR", "PDR"])
    t = read_labels(f, spec, patient_column="patient")
    assert [r.values[0] for r in t.rows.values()] == [1.0, 0.0, 2.0]
    assert t.rows["training/2.png"].patient == "p2"
    f.write_text("path,label\ntraining/0.png,NPDR\ntraining/1.png,severe\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 3, column 'label': unknown class name 'severe'"):
        read_labels(f, spec)
    f.write_text("path,grade\ntraining/0.png,1\n")
    with pytest.raises(ValueError, match="column 'label' not found"):
        read_labels(f, spec)


def test_csv_multilabel_group_column_and_missing(folder):
    s = LabelSchema(["no DR", "NPDR", "PDR", "DME"], {"DR": ["no DR", "NPDR", "PDR"]})
    f = folder / "m.csv"
    f.write_text("path,DR,DME\ntraining/0.png,NPDR,1\ntraining/1.png,-,0\ntraining/2.png,0,\n")
    t = read_labels(f, LabelSpec("multilabel", schema=s))
    v = {k: r.values for k, r in t.rows.items()}
    assert v["training/0.png"] == (0.0, 1.0, 0.0, 1.0)
    assert all(math.isnan(x) for x in v["training/1.png"][:3]) and v["training/1.png"][3] == 0.0
    assert v["training/2.png"][:3] == (1.0, 0.0, 0.0) and math.isnan(v["training/2.png"][3])
    f.write_text("path,DR,DME\ntraining/0.png,moderate,1\n")
    with pytest.raises(ValueError, match=r"line 2, column 'DR': unknown class name 'moderate'"):
        read_labels(f, LabelSpec("multilabel", schema=s))


def test_imagenet_folder_unknown_class(tmp_path, image_folder):
    t = read_labels(image_folder, LabelSpec("classify", names=["a", "b"]))
    assert len(t.rows) == 6
    with pytest.raises(ValueError, match=r"images/b: unknown class name 'b'"):
        read_labels(image_folder, LabelSpec("classify", names=["a", "c"]))


def test_forecast_rows(folder):
    f = folder / "training_labels.txt"
    f.write_text("training/0.png;1, 400\n")
    assert read_labels(f, LabelSpec("forecast")).rows["training/0.png"].values == (1.0, 400.0)
    f.write_text("training/0.png;1, -3\n")
    with pytest.raises(ValueError, match="line 1: the interval"):
        read_labels(f, LabelSpec("forecast"))


def test_load_table_from_cache_with_official_label_file(caches, toy):
    spec = LabelSpec("classify")
    t = load_table([caches["fundus-dr"]["training"]], spec)
    assert t.x.shape == (45, 2 * 64)  # CLS of both blocks of vit_test (depth 2, width 64)
    assert spec.names == ["0", "1", "2", "3", "4"]
    assert set(t.y[:, 0]) == {0, 1, 2, 3, 4}
    assert list(t.encoders) == ["Fundus"] and t.encoders["Fundus"].sha256
    ds = FeatureDataset(t, "classify")
    assert ds[0]["x"].shape == (128,) and ds[0]["y"].shape == (1,)


def test_cache_from_another_encoder_is_refused(caches, rec_root, rec_weights_oct, toy):
    train = load_table([caches["fundus-dr"]["training"]], LabelSpec("classify"))
    other = extract(
        rec_weights_oct,
        toy["fundus-dr"].root,
        rec_root / "features" / "dr_test_octenc.safetensors",
        "test",
        modality="Fundus",
    )
    with pytest.raises(
        ValueError,
        match=r"dr_test_octenc.safetensors: features from a different encoder.*"
        r"weights differ",
    ):
        load_table([other], LabelSpec("classify"), encoders=train.encoders)
    with pytest.raises(ValueError, match="not among the modalities"):
        load_table([caches["oct-dme"]["test"]], LabelSpec("classify"), encoders=train.encoders)


def test_wrong_count_in_official_file_is_reported_through_the_cache(tmp_path, rec_weights, toy):
    root = tmp_path / "dr"
    shutil.copytree(toy["fundus-dr"].root, root)
    cache = extract(rec_weights, root, tmp_path / "f.safetensors", "test")
    lines = (root / "test_labels.txt").read_text().splitlines()
    lines[3] = lines[3] + ", 1"
    (root / "test_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"test_labels.txt, line 4: expected 1 class index, got 2"):
        load_table([cache], LabelSpec("classify"))


def test_multimodal_caches_combine(caches, toy):
    s = LabelSchema(["normal", "DME", "AMD", "DR"], {"oct": ["normal", "DME", "AMD"]})
    oct_csv = toy["oct-dme"].root / "ml.csv"
    fun_csv = toy["fundus-dr"].root / "ml.csv"
    import csv

    with open(toy["oct-dme"].root / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "training"]
    oct_csv.write_text("path,oct\n" + "".join(f"{r['path']},{r['label']}\n" for r in rows))
    with open(toy["fundus-dr"].root / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "training"]
    fun_csv.write_text("path,DR\n" + "".join(f"{r['path']},{int(r['label'] != '0')}\n" for r in rows))
    t = load_table(
        [caches["oct-dme"]["training"], caches["fundus-dr"]["training"]],
        LabelSpec("multilabel", schema=s),
        labels=[oct_csv, fun_csv],
    )
    is_oct = t.modality == "OCT"
    assert is_oct.sum() == 27 and (~is_oct).sum() == 45
    assert np.isnan(t.y[is_oct, 3]).all() and not np.isnan(t.y[is_oct, :3]).any()
    assert np.isnan(t.y[~is_oct, :3]).all() and set(t.y[~is_oct, 3]) == {0.0, 1.0}
    assert sorted(t.encoders) == ["Fundus", "OCT"] and isinstance(t.encoders["OCT"], EncoderRef)
    assert t.encoders["OCT"].mismatch(t.encoders["Fundus"]) is not None
