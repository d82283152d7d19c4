"""A user's mistakes get one-line errors (exit 2) naming the file and line, never a silently wrong run: labels come
from the split the features were extracted from, labels outside the declared classes are refused, run folders are
never reused by accident, and malformed label files are named."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from tests.recognition.conftest import extract
from visionfm.cli import main
from visionfm.recognition.data import load_table
from visionfm.recognition.labels import LabelSpec, read_labels

FAST = ["--epochs", "2", "--batch-size", "16", "--n-boot", "0", "--device", "cpu"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def decoyed(toy, rec_root, rec_weights):
    """A copy of the DR phantoms with a decoy label file sorting before the real one, and its training features."""
    root = rec_root / "decoyed"
    if not root.exists():
        shutil.copytree(toy["fundus-dr"].root, root)
        lines = (root / "training_labels.txt").read_text().splitlines()
        (root / "a_decoy_labels.txt").write_text("".join(f"{ln.split(';')[0]};0\n" for ln in lines))
    return root, extract(rec_weights, root, rec_root / "features" / "decoyed_training.safetensors", "training")


def test_labels_come_from_the_features_split_and_are_recorded(decoyed, rec_root):
    root, cache = decoyed
    t = load_table([cache], LabelSpec("classify"))
    assert t.label_sources == {str(cache): str(root / "training_labels.txt")}
    assert len(set(t.y[:, 0].tolist())) == 5  # the real grades, not the decoy's zeros
    run = rec_root / "runs" / "decoyed"
    assert main(["classify", "train", "--train", str(cache), "--output", str(run), *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["labels"] == {str(cache): str(root / "training_labels.txt")}


def test_features_without_a_recorded_split_use_their_stored_labels(decoyed, tmp_path):
    _, cache = decoyed
    with safe_open(str(cache), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta.pop("split", None)
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    t = load_table([old], LabelSpec("classify"))
    assert t.label_sources == {str(old): f"stored in {old}"} and len(set(t.y[:, 0].tolist())) == 5


def test_a_label_outside_the_classes_is_an_error(caches, tmp_path, toy, capsys):
    rows = (toy["fundus-dr"].root / "manifest.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    col = header.split(",").index("label")
    bad = body[0].split(",")
    bad[col] = "7"
    f = tmp_path / "labels.csv"
    f.write_text("\n".join([header, ",".join(bad), *body[1:]]) + "\n")
    c = caches["fundus-dr"]["training"]
    args = ["classify", "train", "--train", str(c), "--labels", str(f), "--output", str(tmp_path / "r"), *FAST]
    assert main(args) == 2
    assert "class indices [5, 6] never occur" in _one_line_error(capsys)  # not an 8-class head
    assert main([*args, "--classes", "0", "1", "2", "3", "4"]) == 2
    assert "labels.csv, line 2" in (e := _one_line_error(capsys)) and "out of range for the 5 declared" in e
    assert not (tmp_path / "r").exists()


def test_an_existing_run_folder_needs_resume_or_overwrite(caches, tmp_path, capsys):
    c = caches["fundus-dr"]
    run = tmp_path / "run"
    args = ["classify", "train", "--train", str(c["training"]), "--output", str(run), *FAST]
    assert main(args) == 0
    first, n_log = (run / "metrics.json").read_bytes(), len((run / "log.jsonl").read_text().splitlines())
    assert main(args) == 2
    assert "already holds a recognition run; pass --resume to continue it or --overwrite" in _one_line_error(capsys)
    assert (run / "metrics.json").read_bytes() == first  # untouched
    assert main([*args, "--overwrite"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == n_log  # a fresh run, not appended to the old log
    assert main([*args, "--resume"]) == 0  # a finished run resumes to its end: nothing more to do
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["classify", "train", "--train", str(c["training"]), "--output", str(other), "--overwrite", *FAST]) == 2
    assert "not empty and not a recognition run folder" in _one_line_error(capsys) and (other / "notes.txt").is_file()
    assert main(["finetune", "--weights", "w", "--data", "d", "--output", str(run)]) == 2
    assert "already holds a recognition run" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "name, text, match",
    [
        (
            "training_labels.txt",
            "training/0.png;1\ntraining/1.png;inf\n",
            r"training_labels.txt, line 2: infinite label",
        ),
        (
            "labels.csv",
            "path,label\ntraining/0.png,1\ntraining/1.png,1,2\n",
            r"labels.csv, line 3: 3 fields, but the header has 2",
        ),
        ("labels.csv", "path,label\ntraining/0.png,1\ntraining/1.png\n", r"labels.csv, line 3: 1 fields"),
        ("labels.csv", b"path,label\ntraining/0.png,caf\xe9\n", r"labels.csv, line 2: not UTF-8 text"),
    ],
)
def test_malformed_label_files_are_named(tmp_path, name, text, match):
    f = tmp_path / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match):
        read_labels(f, LabelSpec("classify"), check_images=False)


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_bytes("\ufeffpath,label\ntraining/0.png,1\ntraining/1.png,0\n".encode())  # Excel's "CSV UTF-8"
    t = read_labels(f, LabelSpec("classify"), check_images=False)
    assert [r.values for r in t.rows.values()] == [(1.0,), (0.0,)]


def test_finetune_names_a_missing_split(toy, rec_weights, tmp_path, capsys):
    args = [
        "finetune",
        "--weights",
        str(rec_weights),
        "--data",
        str(toy["fundus-dr"].root),
        "--output",
        str(tmp_path / "run"),
        "--input-size",
        "32",
    ]
    for split in (["--split", "bogus"], ["--val-split", "bogus"]):
        assert main([*args, *split]) == 2
        assert "no bogus_labels.txt for split 'bogus'; splits here: test, training" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # nothing half-made
