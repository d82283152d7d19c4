"""Label schemas of the multi-label decoder: output names, softmax groups, loss weights.

A schema names the K outputs of a multi-label head. Outputs inside a *group* are mutually exclusive and trained
with one softmax cross-entropy (the DR grade); every other output is an independent sigmoid (binary
cross-entropy). The official VisionFM schema has 13 outputs, the first five forming the DR grade group
(``Healthy`` is grade 0, as in the official loss, which takes ``target[:, :5]`` as the grading target)::

    Healthy, DR-1, DR-2, DR-3, DR-4 | DR | Glaucoma | AMD | Cataract | Hypertensive Retinopathy |
    Retinal Vein Occlusion | Myopia | Retinal Detachment

Schemas are registered by name (:data:`SCHEMAS`) or read from YAML::

    outputs: [no DR, NPDR, PDR, DME]
    groups: {DR: [no DR, NPDR, PDR]}
    weights: {DR: 1.0, DME: 1.0}        # optional; a group's weight is keyed by the group name
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..registry import Registry

__all__ = ["OFFICIAL_13", "SCHEMAS", "LabelSchema", "get_schema", "list_schemas", "load_schema"]


@dataclass
class LabelSchema:
    """Outputs of a multi-label decoder.

    Attributes:
        outputs: the K output names, in order.
        groups: group name -> member output names (contiguous or not); each group is one softmax.
        weights: loss weight per binary output or per group name (default 1).
        name: a label for reports.
    """

    outputs: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    name: str = "custom"

    def __post_init__(self) -> None:
        self.outputs = [str(o) for o in self.outputs]
        if not self.outputs:
            raise UserError("a label schema needs at least one output")
        dup = sorted({o for o in self.outputs if self.outputs.count(o) > 1})
        if dup:
            raise UserError(f"schema {self.name!r}: duplicate output names {dup}")
        seen: set[str] = set()
        for g, members in self.groups.items():
            if len(members) < 2:
                raise UserError(f"schema {self.name!r}: group {g!r} needs at least 2 outputs, got {members}")
            unknown = [m for m in members if m not in self.outputs]
            if unknown:
                raise UserError(
                    f"schema {self.name!r}: group {g!r} names unknown outputs {unknown}; outputs: {self.outputs}"
                )
            twice = [m for m in members if m in seen]
            if twice:
                raise UserError(f"schema {self.name!r}: outputs {twice} are in more than one group")
            seen.update(members)
            if g in self.outputs:
                raise UserError(f"schema {self.name!r}: group name {g!r} is also an output name")
        bad = sorted(set(self.weights) - set(self.outputs) - set(self.groups))
        if bad:
            raise UserError(f"schema {self.name!r}: weights for unknown outputs/groups {bad}")

    @property
    def k(self) -> int:
        """Number of outputs."""
        return len(self.outputs)

    def group_indices(self) -> dict[str, list[int]]:
        """Group name -> output indices."""
        return {g: [self.outputs.index(m) for m in members] for g, members in self.groups.items()}

    def binary_indices(self) -> list[int]:
        """Indices of the outputs outside every group."""
        grouped = {m for members in self.groups.values() for m in members}
        return [i for i, o in enumerate(self.outputs) if o not in grouped]

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _official13() -> LabelSchema:
    outputs = [
        "Healthy",
        "DR-1",
        "DR-2",
        "DR-3",
        "DR-4",
        "DR",
        "Glaucoma",
        "AMD",
        "Cataract",
        "Hypertensive Retinopathy",
        "Retinal Vein Occlusion",
        "Myopia",
        "Retinal Detachment",
    ]
    # Official loss: 5 * CE(DR grade) + 5 * BCE(hypertensive retinopathy) + 1 * every other BCE.
    return LabelSchema(
        outputs, {"DR grade": outputs[:5]}, {"DR grade": 5.0, "Hypertensive Retinopathy": 5.0}, "official13"
    )


SCHEMAS: Registry[LabelSchema] = Registry("label schema")
SCHEMAS.add("official13", _official13())
OFFICIAL_13 = SCHEMAS.get("official13")


def list_schemas() -> list[str]:
    """Registered schema names."""
    return SCHEMAS.names()


def load_schema(path: str | Path) -> LabelSchema:
    """Read a schema from YAML (keys ``outputs``, optional ``groups``, ``weights``, ``name``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown keys or an inconsistent schema (the file is named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label schema file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "outputs" not in data:
        raise UserError(f"{path}: a label schema is a mapping with at least 'outputs: [names]'")
    unknown = sorted(set(data) - {"outputs", "groups", "weights", "name"})
    if unknown:
        raise UserError(f"{path}: unknown schema keys {unknown}; valid: outputs, groups, weights, name")
    try:
        return LabelSchema(
            list(data["outputs"]),
            dict(data.get("groups") or {}),
            dict(data.get("weights") or {}),
            str(data.get("name", path.stem)),
        )
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def get_schema(spec: str | dict | LabelSchema | None) -> LabelSchema:
    """A schema from a registered name, a YAML path, a dict (as saved in a run) or a schema; None: official 13."""
    if spec is None:
        return OFFICIAL_13
    if isinstance(spec, LabelSchema):
        return spec
    if isinstance(spec, dict):
        return LabelSchema(**spec)
    if spec in SCHEMAS:
        return SCHEMAS.get(spec)
    if str(spec).endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_schema(spec)
    raise UserError(
        f"unknown label schema {spec!r}: give a registered name ({', '.join(list_schemas())}) or a YAML file"
    )
