"""Fixtures of the demo tests: the headless browser of the synthetic-image tests."""
