"""A tiny named registry used for every extension point (encoders, modalities, converters, heads, tasks).

Names may have aliases (other spellings), and a registry may fold names before looking them up (case, spaces,
dashes), so ``MODALITIES.add("ICGA", m, aliases=("indocyanine green",))`` is all it takes to add a modality.

Example:
    >>> ARCHS = Registry("architecture")
    >>> @ARCHS.register("vit_tiny", aliases=("vit_tiny_patch16",))
    ... def vit_tiny(**kw): ...
    >>> ARCHS.get("vit_tiny_patch16") is ARCHS.get("vit_tiny")
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .errors import UserError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """A name that is not registered: a user error (one line at the CLI), still a ``KeyError`` for old callers."""

    __str__ = Exception.__str__  # KeyError would quote the whole message


def _identity(name: str) -> str:
    return name


class Registry(Generic[T]):
    """Maps unique names (and their aliases) to objects; unknown names raise :class:`UnknownNameError`.

    Args:
        kind: what the registry holds, used in messages ("modality", "head", ...).
        fold: maps a spelling to its lookup key (default: the name itself); canonical names and aliases are folded
            the same way, so ``fold=str.lower`` makes lookups case-insensitive.
    """

    def __init__(self, kind: str, fold: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self._fold = fold or _identity
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}  # folded spelling -> canonical name
        self._lazy: dict[str, str] = {}  # name -> module that registers it when imported

    def register(self, name: str, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (names are unique) and its ``aliases``."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases)
            return obj

        return deco

    def add_lazy(self, name: str, module: str, aliases: Iterable[str] = ()) -> None:
        """Declare ``name`` now and import ``module`` (which registers it with :meth:`add`) on first :meth:`get`.

        Keeps the name listable (command lines, help, choices) without importing a heavy module such as torch.
        """
        self.add(name, None, aliases)  # type: ignore[arg-type]
        self._lazy[name] = module

    def add(self, name: str, obj: T, aliases: Iterable[str] = ()) -> None:
        """Register ``obj`` under ``name`` and every alias; a name or alias taken by another entry is an error.

        The module declared by :meth:`add_lazy` for ``name`` fills in its entry here.
        """
        if name in self._lazy and self._items.get(name) is None:
            self._items[name] = obj
            self._aliases.update(dict.fromkeys({self._fold(s) for s in (name, *aliases)}, name))
            return
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        spellings = {self._fold(s) for s in (name, *aliases)}
        taken = sorted(s for s in spellings if self._aliases.get(s, name) != name)
        if taken:
            raise ValueError(f"{self.kind} {name!r}: spelling(s) {taken} already name another {self.kind}")
        self._items[name] = obj
        self._aliases.update(dict.fromkeys(spellings, name))

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or any of its aliases.

        Raises:
            UnknownNameError: nothing is registered under that spelling (the message lists the valid names).
        """
        if name in self._items:
            return name
        try:
            return self._aliases[self._fold(str(name))]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def get(self, name: str) -> T:
        """The object registered under ``name`` or one of its aliases (importing a lazily declared one)."""
        key = self.canonical(name)
        if self._items[key] is None and key in self._lazy:
            importlib.import_module(self._lazy[key])
            if self._items[key] is None:
                raise ImportError(f"{self._lazy[key]} did not register {self.kind} {key!r}")
        return self._items[key]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or self._fold(name) in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
