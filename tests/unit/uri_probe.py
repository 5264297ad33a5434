"""A pytest plugin that prints the libvirt URI the harness plugin would open
(tests/unit/test_session.py); it boots nothing."""

import pytest

from harness.plugin import session_options


def pytest_collection_finish(session: pytest.Session) -> None:
    print(f"session uri: {session_options(session.config).libvirt_uri}")
