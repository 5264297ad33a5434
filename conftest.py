# The harness's pytest plugin is registered through the `pytest11` entry point
# (see pyproject.toml); nothing else is needed here. Fixtures for the project's
# own tests live in tests/conftest.py.
