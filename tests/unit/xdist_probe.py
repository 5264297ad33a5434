"""A pytest plugin for tests/unit/test_matrix.py: records which xdist worker got each
test and runs none of them (no fixture is set up, so no VM boots).

Loaded with `-p xdist_probe` (tests/unit on PYTHONPATH); writes
"<worker> <nodeid>" lines to the file named by $XDIST_PROBE_OUT."""

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    with open(os.environ["XDIST_PROBE_OUT"], "a") as out:
        out.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {item.nodeid}\n")
    return True  # handled: the default protocol (fixtures, the test itself) never runs
