"""Started by test_warm_start.py, in a pytest process of its own as a user's run: one
machine of a spec that only the calling test uses (WARM_PROBE_MARK), and what
its start cost, written as JSON to WARM_PROBE_OUT. Not collected on its own (no
test_ prefix)."""

import json
import os
import time
from pathlib import Path

import pytest

from harness.vm import savecache

pytestmark = pytest.mark.vm


def _meet(name: str) -> int:
    """With WARM_PROBE_MEET (a folder), say this machine is up there and wait (ten
    minutes at most) until another run's is too: how many were up at once."""
    folder = os.environ.get("WARM_PROBE_MEET")
    if not folder:
        return 1
    (Path(folder) / name).touch()
    for _ in range(3000):
        if len(os.listdir(folder)) >= 2:
            break
        time.sleep(0.2)
    return len(os.listdir(folder))


def test_probe(machine_factory, harness_session):
    extra = {"write_files": [{"path": "/etc/harness-warm-probe",
                              "content": os.environ["WARM_PROBE_MARK"] + "\n"}]}
    m = machine_factory("probe", extra_config=extra)
    m.succeed("test -e /etc/harness-warm-probe")
    Path(os.environ["WARM_PROBE_OUT"]).write_text(json.dumps({
        "met": _meet(m.res.domain.name()), "timings": m.timings,
        "warm": isinstance(m.template, savecache.Template),
        "domain": m.res.domain.name(), "uuid": m.res.domain.UUIDString(),
        "key": harness_session.templates.cache_keys.get(m.spec.key(), ""),
    }))
