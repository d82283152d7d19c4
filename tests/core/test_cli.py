"""Every core command through main([...]); user errors give one clear line and exit code 2."""

import pytest

from visionfm.cli import COMMANDS, main
from visionfm.features import load_features


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("extract", "convert", "info"):
        assert name in out
    assert len(COMMANDS) >= 3


def test_convert_info_extract(tmp_path, official_fixture, image_folder, capsys):
    out = tmp_path / "enc.safetensors"
    assert main(["convert", "--weights", str(official_fixture / "checkpoint.pth"), "--output", str(out)]) == 0
    assert "[visionfm]" in capsys.readouterr().out
    assert main(["info", "--weights", str(out)]) == 0
    assert "modality Fundus" in capsys.readouterr().out
    feats = tmp_path / "f.safetensors"
    assert (
        main(
            [
                "extract",
                "--weights",
                str(out),
                "--data",
                str(image_folder),
                "--output",
                str(feats),
                "--input-size",
                "64",
                "--num-workers",
                "0",
                "--tta",
                "hflip",
            ]
        )
        == 0
    )
    fs = load_features(feats)
    assert fs.cls.shape == (6, 3 * 128) and fs.meta["tta"] == "hflip"


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["info", "--weights", "nowhere.pth"], "weights file not found: nowhere.pth"),
        (["info", "--weights", "{w}", "--modality", "xray"], "unknown modality 'xray'"),
        (["convert", "--weights", "{w}", "--output", "x.pth"], "must end in .safetensors"),
        (["extract", "--weights", "{w}", "--data", "nowhere", "--output", "f.safetensors"], "data not found: nowhere"),
    ],
)
def test_user_errors_are_one_line(argv, msg, tiny_weights, capsys):
    assert main([a.format(w=tiny_weights) for a in argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
