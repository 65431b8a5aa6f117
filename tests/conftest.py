"""Fixture plugins shared by the test packages (pytest only reads pytest_plugins here)."""

pytest_plugins = ["tests.console.databases"]
