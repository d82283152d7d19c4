"""The configuration spine: typed dataclass configs, nested not copied, read from YAML and derived into CLI flags.

Every config is a dataclass; a task's config holds the loop's settings as a nested ``train: TrainConfig`` instead of
copying them. This module (no torch import: ``--help`` stays fast) gives:

- :func:`load_config` — defaults < YAML file < overrides, for nested dataclasses (``train:`` sections in YAML,
  ``"train.lr"`` keys in overrides), values checked and coerced against the field types (a string where a list is
  expected is a list of one; ``"1e-3"`` is a float), unknown keys named with the valid ones, legacy flat keys mapped
  through the class's ``config_aliases``.
- :func:`save_config` — the resolved config as YAML, atomically.
- :func:`add_config_args` / :func:`config_from_args` — argparse options built from the dataclass fields (name, type,
  nargs, choices, help from ``field(metadata={"help": ...})`` or the class docstring's ``Attributes:`` section, the
  default shown), so a new field appears on the command line by itself.

Field metadata understood: ``help`` (text), ``choices`` (an iterable or a zero-argument callable, e.g. a registry's
``names``), ``flag`` (extra flag spellings, e.g. ``("--output",)``), ``cli`` (False: not a command-line option).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .fileio import atomic_write

__all__ = [
    "add_config_args",
    "check_choices",
    "coerce_value",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "field_help",
    "load_config",
    "read_yaml",
    "save_config",
]

_MISSING = dataclasses.MISSING


# -- types --------------------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007 (built at run time)
    return tp, False


def _is_config(tp: Any) -> bool:
    return inspect.isclass(tp) and dataclasses.is_dataclass(tp)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    """Coerce one scalar to ``tp`` (bool, int, float, str, Literal, or Any)."""
    if typing.get_origin(tp) is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if math.isnan(number):
            raise ConfigError(f"{where}: NaN is not a valid value")
        return number
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value  # Any, or a type this module does not check


def coerce_value(tp: Any, value: Any, where: str) -> Any:
    """Check and coerce ``value`` against the type hint ``tp``; ``where`` names it in errors.

    A string (or any scalar) where a list or tuple is expected becomes a list of one, as a user writing
    ``data: /images`` in YAML means one folder, not its characters.
    """
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: a value is required")
    origin = typing.get_origin(tp)
    if _is_config(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return config_from_dict(tp, value, where)
    if origin in (list, tuple, set, frozenset, Iterable, typing.Sequence):
        args = typing.get_args(tp)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(items)} ({value!r})")
            return tuple(coerce_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, items)))
        item_tp = args[0] if args else Any
        coerced = [coerce_value(item_tp, v, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(coerced) if origin is tuple else coerced
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce_value(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    return _scalar(tp, value, where)


def check_choices(cfg: Any) -> None:
    """Check every field declaring ``metadata["choices"]`` (a list or a registry's ``names``) holds one of them.

    Call it from a config's ``__post_init__`` so a config built in Python is validated like one read from YAML.

    Raises:
        ConfigError: naming the field, the value and the valid choices.
    """
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        valid = list(choices() if callable(choices) else choices)
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v not in valid:
                raise ConfigError(f"{f.name}: {v!r} is not one of {valid}")


# -- dict <-> config ----------------------------------------------------------------------------------------------
def _aliases(cls: type) -> dict[str, str]:
    """Legacy key -> current dotted key, declared as ``config_aliases: ClassVar[dict[str, str]]`` on the class."""
    return dict(getattr(cls, "config_aliases", {}) or {})


def _nest(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Turn dotted keys (``train.lr``), legacy aliases and flat keys of a nested config into nested dicts."""
    hints, names = _hints(cls), {f.name for f in dataclasses.fields(cls)}
    nested = {n for n in names if _is_config(_strip_optional(hints[n])[0])}
    aliases = _aliases(cls)
    legacy = getattr(cls, "config_legacy", None)
    if legacy is not None:  # the class's own rewrite of old files a key alias cannot express (by value type)
        values = legacy(dict(values))
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"{where}: setting names must be words, got {key!r} (is the file a mapping of name: value lines?)"
            )
        key = aliases.get(key, key)
        head, _, rest = key.partition(".")
        if not rest and head not in names:
            owners = [n for n in nested if head in {f.name for f in dataclasses.fields(_strip_optional(hints[n])[0])}]
            if len(owners) == 1:  # an old flat file: the loop's settings at the top level
                head, rest = owners[0], key
        if rest:
            sub = out.setdefault(head, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{where}: {head} is both a value and a section")
            sub[rest] = value
        elif head in nested and isinstance(value, Mapping) and isinstance(out.get(head), dict):
            out[head] = {**value, **out[head]}
        else:
            out[head] = value
    return out


def config_from_dict(cls: type, values: Mapping[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (possibly nested, dotted or legacy-keyed) mapping, checking every value.

    Raises:
        ConfigError: an unknown key (named, with the valid ones), a value of the wrong type, or a failed check of
            the class's own ``__post_init__`` (re-raised with ``where``).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__} {values!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = _nest(cls, values, where)
    unknown = sorted(k for k in values if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown config keys {unknown}; valid: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        tp = hints[name]
        inner, _ = _strip_optional(tp)
        if _is_config(inner) and isinstance(value, Mapping):
            base = config_to_dict(_default_of(fields[name]) or inner())
            value = {**base, **_nest(inner, value, f"{where}.{name}")}
        kwargs[name] = coerce_value(tp, value, f"{where}.{name}" if where != "config" else name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (nested sections as dicts, tuples as lists, paths as strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a dataclass config (nested sections included) as YAML, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; syntax errors and unsafe tags become one-line errors naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML config file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML ({problem})") from None


def load_config(
    cls: type, path: str | Path | None = None, *, base: Mapping[str, Any] | None = None, **overrides: Any
) -> Any:
    """Build dataclass ``cls`` from defaults < ``base`` < YAML file < ``overrides`` (None values ignored).

    Overrides may use dotted keys for nested sections (``**{"train.lr": 1e-3}``) or the nested field's own name
    when it is unambiguous (``lr=1e-3`` reaches ``train.lr``). ``base`` (same key forms) is a preset between the
    class defaults and the file, e.g. the defaults of the method or recipe a setting chose.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: invalid YAML, unknown keys, or values of the wrong type (named, with the file).
    """
    values: dict[str, Any] = _nest(cls, dict(base or {}), "preset")  # a preset's None is a value, not "unset"
    where = "config"
    if path is not None:
        where = str(path)
        data = read_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of name: value settings, got {type(data).__name__}")
        for key, value in _nest(cls, data, where).items():
            if isinstance(value, dict) and isinstance(values.get(key), Mapping):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
    for key, value in _nest(cls, {k: v for k, v in overrides.items() if v is not None}, "arguments").items():
        if isinstance(value, dict) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return config_from_dict(cls, values, where)


# -- command-line flags ---------------------------------------------------------------------------------------------
def field_help(cls: type) -> dict[str, str]:
    """Help text per field: ``metadata["help"]`` or the class docstring's ``Attributes:`` entries."""
    docs: dict[str, str] = {}
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    current = None
    for line in section.splitlines():
        m = re.match(r"^\s{0,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if m and not line.startswith(" " * 9):
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
        elif not line.strip() and current:
            current = None
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = f.metadata["help"]
    return docs


def _choices(f: dataclasses.Field, tp: Any) -> list[Any] | None:
    choices = f.metadata.get("choices")
    if callable(choices):
        choices = choices()
    if choices is None and typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
    return list(choices) if choices is not None else None


def _flag_spec(tp: Any) -> dict[str, Any]:
    """argparse ``type`` / ``nargs`` / ``action`` for a field type."""
    tp, _ = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (list, tuple):
        args = typing.get_args(tp)
        item = args[0] if args else str
        nargs: Any = len(args) if origin is tuple and args and args[-1] is not Ellipsis else "+"
        return {"type": _argtype(item), "nargs": nargs}
    return {"type": _argtype(tp)}


def _argtype(tp: Any) -> Any:
    tp, _ = _strip_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return type(typing.get_args(tp)[0])
    return tp if tp in (int, float, str) else str


def _fmt_default(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v) or "none"
    return "none" if v is None else str(v)


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: Any = None,
    _prefix: str = "",
    _taken: set[str] | None = None,
) -> None:
    """Add one option per field of ``cls`` (and of its nested configs) to ``parser``.

    Flags are the field names with dashes (``--max-steps``); a nested section's fields also answer to their own
    name when no outer field has it (``--lr`` and ``--train.lr``). Every option defaults to None so that
    :func:`config_from_args` can layer defaults < YAML < command line; the help shows the real default.

    Args:
        parser: the (sub-)parser.
        cls: the config dataclass.
        exclude: field names (dotted for nested ones) left off the command line.
        defaults: an instance whose values are shown as defaults (default: ``cls()`` when it can be built).
    """
    taken = _taken if _taken is not None else {a for act in parser._actions for a in act.option_strings}
    exclude = set(exclude)
    hints, docs = _hints(cls), field_help(cls)
    if defaults is None:
        try:
            defaults = cls()
        except TypeError:
            defaults = None
    nested = []
    for f in dataclasses.fields(cls):
        dotted = _prefix + f.name
        if dotted in exclude or not f.init or f.metadata.get("cli") is False:
            continue
        tp = hints[f.name]
        if _is_config(_strip_optional(tp)[0]):
            nested.append((f, _strip_optional(tp)[0]))
            continue
        flags = [f"--{dotted.replace('_', '-')}"]
        if _prefix:
            flags.insert(0, f"--{f.name.replace('_', '-')}")
        flags += list(f.metadata.get("flag", ()))
        flags = [fl for fl in dict.fromkeys(flags) if fl not in taken]
        if not flags:
            continue
        taken.update(flags)
        default = getattr(defaults, f.name, None) if defaults is not None else None
        text = docs.get(f.name, f.name.replace("_", " "))
        parser.add_argument(
            *flags,
            dest=dotted,
            default=None,
            choices=_choices(f, tp),
            **_flag_spec(tp),
            help=f"{text} (default: {_fmt_default(default)})".replace("%", "%%"),
        )
    for f, inner in nested:
        sub_defaults = getattr(defaults, f.name, None) if defaults is not None else None
        add_config_args(
            parser,
            inner,
            exclude=exclude,  # dotted names: compared with the prefixed field names
            defaults=sub_defaults,
            _prefix=f"{_prefix}{f.name}.",
            _taken=taken,
        )


def config_from_args(cls: type, args: argparse.Namespace, path: str | Path | None = None, **extra: Any) -> Any:
    """Defaults < YAML ``path`` < the options :func:`add_config_args` added (those the user gave) < ``extra``."""
    given = {k: v for k, v in vars(args).items() if v is not None and _belongs(cls, k)}
    given.update({k: v for k, v in extra.items() if v is not None})
    return load_config(cls, path, **given)


def _belongs(cls: type, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        return False
    if not rest:
        return True
    inner = _strip_optional(_hints(cls)[head])[0]
    return _is_config(inner) and _belongs(inner, rest)
