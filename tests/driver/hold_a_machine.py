"""Not collected on its own (no test_ prefix): test_machine.py runs it in a
subprocess, then kills that subprocess with SIGKILL while it boots."""

import os
import time

import pytest


@pytest.mark.skipif(not os.environ.get("HARNESS_TEST_HOLD"), reason="run by test_machine.py")
def test_hold(machine_factory):
    machine_factory("held")
    time.sleep(3600)
