"""``visionfm pretrain``: self-supervised pretraining (iBOT or MAE), alone or under ``torchrun``.

Every option comes from :class:`visionfm.pretrain.PretrainConfig` (and its ``train`` section) through
:func:`visionfm.config.add_config_args`; the chosen ``--method`` brings its own defaults, which a ``--config`` YAML
and then the command line override.
"""

from __future__ import annotations

import argparse

from . import command


def _configure(p: argparse.ArgumentParser) -> None:
    from ..config import add_config_args
    from ..pretrain.config import PretrainConfig

    p.add_argument(
        "--config", help="YAML of PretrainConfig settings, e.g. a run's pretrain.yaml (command-line values override it)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --output exactly where it stopped")
    add_config_args(p, PretrainConfig, defaults=PretrainConfig(data=["required unless --synthetic"]))


@command(
    "pretrain",
    "Self-supervised pretraining of an encoder on your images: iBOT (default) or MAE "
    "(--method mae); CPU or GPUs, torchrun.",
    _configure,
)
def run_pretrain(a: argparse.Namespace) -> int:
    import dataclasses

    from ..distributed import is_main
    from ..pretrain import ENCODER_FILE, PretrainConfig, pretrain, pretrain_config

    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    given = {k: v for k, v in vars(a).items() if v is not None and (k in names or k.startswith("train."))}
    run_dir = pretrain(pretrain_config(a.config, **given), resume=a.resume)
    if is_main():
        print(f"encoder: {run_dir / ENCODER_FILE}")
    return 0
