"""The comparison's facts, read from the booted guest and kept for the report.

`harness report` builds its table from artifacts/<distro>/facts.json; nothing
in that table is typed in, so this test is what measures it."""

import json
from pathlib import Path

import pytest

from harness.report import facts

pytestmark = pytest.mark.vm


def test_comparison_facts_are_measured_and_recorded(machine, distro, local_image, pytestconfig):
    measured = facts.gather(machine)
    measured["image_size"] = facts.image_size(local_image.path)
    out = Path(pytestconfig.getoption("--artifacts")) / distro.name / "facts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"distro": distro.name, "title": distro.title, "machine": machine.name,
              "facts": facts.to_json(measured), "timings": machine.boot_timings}
    out.write_text(json.dumps(record, indent=2) + "\n")
    # The kernel is the one fact every guest that answers SSH must give.
    assert measured["kernel"].value, measured["kernel"].why
