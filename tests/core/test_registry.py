"""Registries: aliases and folding in the registry itself, user errors for unknown names, lazily declared entries."""

from __future__ import annotations

import sys
import types

import pytest

from visionfm.errors import UserError
from visionfm.modalities import MODALITIES, Modality, canonical_modality, get_modality, list_modalities
from visionfm.registry import Registry, UnknownNameError


def test_aliases_and_folding():
    reg: Registry[int] = Registry("thing", fold=str.lower)
    reg.add("Alpha", 1, aliases=("first", "A1"))
    assert reg.get("alpha") == reg.get("FIRST") == reg.get("a1") == 1
    assert "ALPHA" in reg and "beta" not in reg and reg.names() == ["Alpha"]
    with pytest.raises(ValueError, match="already name another"):
        reg.add("Other", 2, aliases=("first",))
    with pytest.raises(ValueError, match="already registered"):
        reg.add("Alpha", 3)


def test_unknown_name_is_a_user_error_listing_the_valid_ones():
    reg: Registry[int] = Registry("head")
    reg.add("linear", 1)
    with pytest.raises(UnknownNameError) as e:
        reg.get("mlpp")
    assert isinstance(e.value, UserError) and isinstance(e.value, KeyError)
    assert str(e.value) == "unknown head 'mlpp'; valid: linear"  # not KeyError's quoted repr


def test_a_new_modality_is_one_registration(monkeypatch):
    """Issue 12: a registered modality is found under every spelling, like the built-in ones."""
    monkeypatch.setattr(MODALITIES, "_items", dict(MODALITIES._items))
    monkeypatch.setattr(MODALITIES, "_aliases", dict(MODALITIES._aliases))
    icga = Modality("ICGA", "indocyanine green angiography", (0.2,) * 3, (0.2,) * 3, ("indocyanine green",))
    MODALITIES.add(icga.name, icga, icga.aliases)
    assert canonical_modality("icga") == "ICGA" and get_modality("Indocyanine-Green") is icga
    assert "ICGA" in list_modalities()
    with pytest.raises(UserError, match="unknown modality 'ICGB'"):
        canonical_modality("ICGB")


def test_lazy_entries_import_their_module_on_first_get(monkeypatch):
    reg: Registry[str] = Registry("plugin")
    module = types.ModuleType("fake_plugin_module")
    imported = []

    def exec_module():  # what importing the module does: it registers its object
        imported.append(True)
        reg.add("late", "the object")
        sys.modules["fake_plugin_module"] = module
        return module

    monkeypatch.setattr("importlib.import_module", lambda name: exec_module())
    reg.add_lazy("late", "fake_plugin_module")
    assert reg.names() == ["late"] and "late" in reg and not imported  # listed without importing
    assert reg.get("late") == "the object" and imported == [True]
    assert reg.get("late") == "the object" and imported == [True]  # imported once


def test_lazy_entry_whose_module_does_not_register_is_an_import_error(monkeypatch):
    reg: Registry[str] = Registry("plugin")
    monkeypatch.setattr("importlib.import_module", lambda name: types.ModuleType(name))
    reg.add_lazy("ghost", "some.module")
    with pytest.raises(ImportError, match="did not register plugin 'ghost'"):
        reg.get("ghost")
