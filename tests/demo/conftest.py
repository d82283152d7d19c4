"""Fixtures of the demo tests: the headless browser of the synthetic-image tests."""

from tests.synth.conftest import browser  # noqa: F401 - a fixture, used by name
