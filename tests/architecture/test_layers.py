"""The house rules of docs/architecture.md, checked on the source: which package may import which.

Imports are read from the syntax tree (no module is imported), so a new upward import fails here with the file
and line, before it becomes an import cycle or drags torch into ``visionfm --help``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "visionfm"

# Layer of every top-level module or package of visionfm; a unit may import units of a lower layer only, plus
# the same-layer siblings listed in ALLOWED_SIDEWAYS.
LAYERS: dict[str, int] = {
    # 0-2: plain-Python foundations (no torch): errors, registries, file writing, the config spine, modality facts
    "errors": 0,
    "registry": 1,
    "fileio": 1,
    "distributed": 1,
    "config": 2,
    "modalities": 2,
    "report": 2,
    # 3: models and procedural data
    "models": 3,
    "toydata": 3,
    # 4: reading and writing weights
    "checkpoints": 4,
    # 5-6: shared machinery every task uses (features read images through data)
    "data": 5,
    "engine": 5,
    "evaluation": 5,
    "features": 6,
    # 7: tasks (each owns its config, task object, runs and reports)
    "pretrain": 7,
    "recognition": 7,
    "dense": 7,
    "synth": 7,
    "explain": 7,
    "vl": 7,
    "volumes": 7,
    # 8-11: applications over the tasks; the CLI over everything
    "export": 8,
    "benchmark": 8,
    "serve": 9,
    "demo": 9,
    "demo_probe": 9,
    "cli": 10,
    "__main__": 11,
    "__init__": 8,  # the package's public names, re-exported lazily from the layers below
}
ALLOWED_SIDEWAYS: dict[str, set[str]] = {
    "explain": {"pretrain"},  # attention evolution reads pretraining checkpoints through pretrain.checkpoint
    "synth": {"pretrain"},  # the ratio study pretrains encoders on real:synthetic mixes
    "dense": {"recognition"},  # the dense benchmark reuses recognition's seeded stand-in encoder
    "volumes": {"recognition"},  # volume heads register in recognition's head registry
}
# Known, documented exceptions (late imports inside functions), each with its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("checkpoints", "pretrain"): "the visionfm-run format asks the pretraining task for its checkpoint naming",
}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """(top-level visionfm unit, line) for every visionfm import in ``path``."""
    pkg = path.relative_to(SRC).parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[: len(pkg) - (node.level - 1)])
            full = base + [m for m in (node.module or "").split(".") if m]
            targets = [full[0]] if full else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("visionfm."):
            targets = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("visionfm.")]
        else:
            continue
        out += [(t, node.lineno) for t in targets]
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        for target, line in _imports(path):
            if target == unit or target not in LAYERS:
                continue
            ok = LAYERS[target] < LAYERS[unit] or target in ALLOWED_SIDEWAYS.get(unit, set())
            if not ok and (unit, target) not in EXCEPTIONS:
                bad.append(
                    f"{path.relative_to(SRC.parent)}:{line}: {unit} (layer {LAYERS[unit]}) imports "
                    f"{target} (layer {LAYERS[target]})"
                )
    return bad


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in SRC.rglob("*.py")}
    missing = sorted(units - set(LAYERS))
    assert not missing, f"add these to LAYERS here and to docs/architecture.md: {missing}"


def test_no_upward_imports():
    bad = _violations()
    assert not bad, "imports against docs/architecture.md's layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("unit", ["errors", "registry", "fileio", "config", "modalities", "engine/config.py"])
def test_foundations_do_not_import_torch(unit):
    """The config spine and registries stay torch-free so ``visionfm --help`` and config checks are instant."""
    paths = [SRC / unit] if unit.endswith(".py") else [SRC / f"{unit}.py"]
    for path in paths:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "torch"], f"{path} imports torch"
