"""Fresh machines restored from a saved, booted one (harness.vm.snapshot)."""

import time

import pytest

from harness.images import dockerimage

pytestmark = pytest.mark.vm


def test_machines_restored_one_after_the_other_do_not_see_each_others_writes(
        machine_factory):
    first = machine_factory("first")
    first.succeed("echo first > /var/tmp/harness-mark")
    second = machine_factory("second")  # takes the save's identity: `first` is gone
    assert first.res.domain is None
    second.fail("test -e /var/tmp/harness-mark")
    second.succeed("echo second > /var/tmp/harness-mark2")
    third = machine_factory("third")
    third.fail("test -e /var/tmp/harness-mark || test -e /var/tmp/harness-mark2")


def test_restored_machine_has_the_hosts_time_runs_containers_and_reboots(machine_factory):
    m = machine_factory("restored")
    assert "restore" in m.timings, "expected a restore, not a cold boot"
    guest_now = int(m.succeed("date +%s"))
    assert abs(guest_now - time.time()) < 30
    m.succeed("docker load", stdin=dockerimage.build())
    assert m.succeed(f"docker run --rm --network none {dockerimage.TAG} echo ok").strip() == "ok"
    before = m.boot_id()
    m.reboot()
    assert m.boot_id() != before
    m.wait_for_unit("docker.service")


def test_changed_seed_produces_a_new_save(machine_factory, machine, harness_session):
    extra = {"write_files": [{"path": "/etc/harness-seeded", "content": "yes\n"}]}
    m = machine_factory("seeded", extra_config=extra)
    # Restored from a save of its own spec, made by a cold boot with that seed ...
    assert "restore" in m.timings
    assert m.template is not machine.template
    assert m.template.spec.extra_config == extra
    assert set(harness_session.templates.saves) >= {m.spec.key(), machine.spec.key()}
    # ... so the guest has what the seed wrote, and the shared machine does not.
    assert m.succeed("cat /etc/harness-seeded").strip() == "yes"
    machine.fail("test -e /etc/harness-seeded")


@pytest.mark.cold_boot
def test_cold_boot_marker_boots_from_scratch(machine_factory):
    m = machine_factory("cold")
    assert "restore" not in m.timings and "kernel" in m.timings
