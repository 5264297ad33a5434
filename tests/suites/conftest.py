"""Fixtures the suites share."""

import pytest


@pytest.fixture
def host(testinfra_host):
    """`host`, the name testinfra's documentation uses, for the harness's testinfra
    Host. Defined here because a conftest's fixture always wins over a plugin's:
    pytest-testinfra's plugin defines a `host` of its own (see
    harness.plugin.testinfra_host for why the plugin does not)."""
    return testinfra_host
