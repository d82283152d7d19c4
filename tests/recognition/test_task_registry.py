"""Task kinds are registered classes: a toy kind added in one place runs end to end; configs are validated against
the registries; old flat configs still load; every recognition command of the README still parses."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch import Tensor

from tests.helpers import FIXTURES  # noqa: F401  (the helpers module sets up paths)
from visionfm.cli import build_parser, main
from visionfm.errors import ConfigError
from visionfm.recognition import TASKS, HeadConfig, HeadTask, load_head_config
from visionfm.recognition.runs import run_config

ROOT = Path(__file__).resolve().parents[2]


def _register_toy() -> str:
    """The ONE place the toy kind is defined: grade as a number, L1 loss, mean absolute error."""
    name = "toy-grade"
    if name in TASKS:
        return name

    @TASKS.register(name)
    class ToyGrade(HeadTask):
        """Toy kind: a class index predicted as a number."""

        kind = name
        select = ("mae", "min")
        headline = ("mae",)
        prediction_kind = "regression"

        def __init__(self, head, **kw) -> None:
            super().__init__(head, **kw)
            self.names = ["grade"]

        @classmethod
        def label_width(cls, spec):
            return 1

        @classmethod
        def csv_columns(cls, spec, header, path):
            return ["label"]

        @classmethod
        def out_dim(cls, spec, y):
            return 1

        @classmethod
        def spec_from_run(cls, info):
            from visionfm.recognition import LabelSpec

            return LabelSpec(cls.kind)

        def loss(self, logits: Tensor, batch: dict) -> Tensor:
            return (logits.float() - batch["y"]).abs().mean()

        def scores(self, logits: Tensor) -> Tensor:
            return logits

        def metrics(self, y: np.ndarray, scores: np.ndarray) -> dict:
            return {"mae": float(np.abs(y - scores).mean())}

        def flat(self, m: dict) -> dict:
            return dict(m)

    return name


def test_a_new_task_kind_is_one_registration(caches, rec_root, toy, capsys):
    kind = _register_toy()
    c = caches["fundus-dr"]
    run = rec_root / "runs" / "toy_kind"
    from visionfm.recognition import evaluate_run, predict, train_head

    cfg = load_head_config(
        task=kind,
        train=[str(c["training"])],
        test=[str(c["test"])],
        epochs=30,
        batch_size=16,
        lr=1e-2,
        n_boot=0,
        device="cpu",
        output_dir=str(run),
    )
    train_head(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"]["metric"] == "mae" and m["selection"]["mode"] == "min"
    assert 0 <= m["test"]["mae"] < 2.5 and m["n"]["test"] == 15
    e = evaluate_run(run, [c["test"]], output=rec_root / "runs" / "toy_eval", n_boot=0)
    assert e["test"]["mae"] == pytest.approx(m["test"]["mae"], abs=1e-6)
    out = predict(run, toy["fundus-dr"].root / "test", rec_root / "runs" / "toy_pred.csv", device="cpu")
    assert "pred_grade" in out.read_text().splitlines()[0]
    # the command line offers it too (its own command; a kind registered after the CLI loaded asks for it)
    from visionfm.cli.recognition import register_kind_commands

    register_kind_commands()
    assert (
        main(
            [
                kind,
                "eval",
                "--run",
                str(run),
                "--features",
                str(c["test"]),
                "--n-boot",
                "0",
                "--output",
                str(rec_root / "runs" / "toy_eval2"),
            ]
        )
        == 0
    )
    assert "mae" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"head": "mlpp"}, r"head: 'mlpp' is not one of \[.*'linear'.*'mlp'"),
        ({"task": "clasify"}, r"task: 'clasify' is not one of"),
        ({"feature": "avg"}, r"feature: 'avg' is not one of"),
        ({"balance": "focal"}, "focal' is for forecasting"),
    ],
)
def test_configs_are_validated_at_construction(bad, match):
    with pytest.raises(ConfigError, match=match):
        HeadConfig(**bad)
    with pytest.raises(ConfigError, match=match):
        load_head_config(**bad)


def test_loop_settings_are_nested_not_copied():
    cfg = load_head_config(lr=0.05, epochs=7, output_dir="x", **{"train.batch_size": 8})
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.output_dir, cfg.train.batch_size) == (0.05, 7, "x", 8)
    assert HeadConfig().train.epochs == 100 and HeadConfig().train.progress is False  # the heads' own defaults
    names = set(HeadConfig.__dataclass_fields__)
    assert not names & {"lr", "epochs", "batch_size", "output_dir", "seed", "device", "select_metric"}


def test_old_flat_config_files_still_load(tmp_path, caches, capsys):
    legacy = {
        "task": "classify",
        "train": [str(caches["fundus-dr"]["training"])],
        "test": [str(caches["fundus-dr"]["test"])],
        "val": [],
        "labels": None,
        "head": "linear",
        "head_options": {},
        "select_metric": "accuracy",
        "output_dir": str(tmp_path / "run"),
        "epochs": 3,
        "max_steps": None,
        "batch_size": 16,
        "lr": 0.01,
        "min_lr": 0.0,
        "weight_decay": 1e-4,
        "warmup_epochs": 0.0,
        "seed": 1,
        "device": "cpu",
        "progress": False,
        "n_boot": 0,
    }
    cfg = run_config({"config": legacy})  # run.yaml written before the nesting
    assert cfg.train_features == legacy["train"] and cfg.train.lr == 0.01 and cfg.train.select_metric == "accuracy"
    assert cfg.train.seed == 1 and cfg.train.output_dir == legacy["output_dir"]
    f = tmp_path / "old.yaml"
    f.write_text(yaml.safe_dump(legacy))
    assert main(["classify", "train", "--config", str(f)]) == 0
    assert "selected on validation accuracy" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["config"]
    assert saved["train"]["lr"] == 0.01 and saved["train_features"] == legacy["train"]  # written nested


def _readme_commands() -> list[list[str]]:
    """Every ``visionfm <recognition command>`` line of the README and the recognition docs, joined."""
    verbs = {"classify", "multilabel", "regress", "forecast", "fewshot", "finetune", "predict", "split"}
    cmds = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "readme" / "recognition.md"):
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            loop = re.match(r"^for (\w+) in (\S+)", line)
            if loop:  # a shell loop: its first value
                line = line.replace(f"${{{loop.group(1)}}}", loop.group(2)).replace(f"${loop.group(1)}", loop.group(2))
            m = re.match(r"^(?:for .*?; do )?visionfm (\S+)(.*?)(?:; done.*)?$", line)
            if not m or m.group(1) not in verbs or "..." in line:
                continue
            tokens = shlex.split(f"{m.group(1)}{m.group(2)}")
            if any(t.startswith("$") and not tokens[i - 1].startswith("--") for i, t in enumerate(tokens) if i):
                continue  # a shell variable standing for several arguments
            cmds.append([t.replace("$", "") for t in tokens])
    return cmds


def test_documented_recognition_commands_parse():
    cmds = _readme_commands()
    assert len(cmds) >= 20
    parser = build_parser()
    for argv in cmds:
        parser.parse_args(argv)  # SystemExit(2) on any flag that stopped existing
