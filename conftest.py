"""Fixture modules shared by the test suite (tests/conftest.py holds the common fixtures)."""

pytest_plugins = ["tests.live", "tests.receiver"]
