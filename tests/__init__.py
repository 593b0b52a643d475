"""The test suite (a package, so tests can import shared names from conftest)."""
