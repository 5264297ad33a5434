"""A check reports and the watchdog acts: Machine.check_alive() never changes the
guest, while the watchdog turn every wait takes starts a new QEMU process for a
domain the guest's reset ended, and power-cycles a reset the firmware never
answered. Real libvirt: a tiny domain with no disk, started paused."""

import time
from pathlib import Path

import libvirt
import pytest

from harness import catalog
from harness.images import LocalImage
from harness.vm import domain
from harness.vm.machine import BootFailure, MachineSpec


@pytest.fixture
def tiny(harness_session):
    """A machine of refos (UEFI, where a stuck reset is watched for) whose domain is
    a paused 64 MiB BIOS guest with no disk: no image is opened, no guest code runs."""
    s = harness_session
    m = s.new_machine("watchdog", MachineSpec(catalog.get("refos"),
                                              LocalImage(Path("unused"), "")))
    m.res.port = s.forward_port()
    spec = domain.DomainSpec(
        name=s.run.domain_name(m.id), run_id=s.run.id, memory_mib=64, firmware="bios",
        disks=(), console_log=m.console_log, ssh_port=m.port, owner=s.run.owner.attrs())
    m.res.domain = s.conn.createXML(domain.domain_xml(spec), libvirt.VIR_DOMAIN_START_PAUSED)
    m._remember_domain()
    yield m
    m.destroy()


def test_check_alive_only_reports_and_the_watchdog_power_cycles_a_stuck_reset(tiny):
    m = tiny
    before = m.res.domain.ID()
    m.console_log.write_text("Linux version 6.1.0\nreboot: machine restart\n")
    # Injected: the firmware silent since that reset for an hour (a crawl under TCG
    # that cannot be brought about on demand).
    m._console_seen = (len(m.console_text()), time.monotonic() - 3600)

    m.check_alive()
    assert (m.power_cycles, m.res.domain.ID()) == (0, before)

    m.watchdog()
    assert m.power_cycles == 1 and m.res.domain.ID() != before and m.running()


# The kernel's last lines at a reset: both, or under `quiet` (loglevel 4) only the
# KERN_EMERG one (harness.vm.console.ends_with_reset).
RESETS = ["[  137.17] reboot: Restarting system\n[  137.18] reboot: machine restart\n",
          "[  137.17] reboot: Restarting system\n"]


@pytest.mark.parametrize("reset", RESETS, ids=["loglevel-7", "quiet"])
def test_a_domain_ended_by_the_guests_reset_is_started_again_as_a_new_process(tiny, reset):
    m = tiny
    before = m.res.domain.ID()
    # What QEMU does at a guest's reset with on_reboot=destroy: the kernel's last
    # lines on the console, then the process ends.
    m.console_log.write_text("Linux version 6.1.0\n" + reset)
    m.res.domain.destroy()

    m.check_alive()  # a reset is not a death
    assert not m.running()
    m.watchdog()
    assert m.running() and m.res.domain.ID() != before
    assert (m.restarts, m.power_cycles) == (1, 0)
    # The new process appends to the console log: the earlier boot is still there.
    assert m.console_text().startswith("Linux version 6.1.0\n")


def test_a_domain_that_ended_without_a_reset_is_reported_not_started_again(tiny):
    m = tiny
    m.console_log.write_text("Linux version 6.1.0\nreboot: Power down\n")
    m.res.domain.destroy()

    with pytest.raises(BootFailure, match="no longer running"):
        m.watchdog()
    assert m.restarts == 0 and not m.running()


def test_a_reset_line_from_an_earlier_process_does_not_start_the_domain_again(tiny):
    m = tiny
    m.console_log.write_text("Linux version 6.1.0\nreboot: machine restart\n")
    m.res.domain.destroy()
    m.watchdog()
    # The new process ends before printing anything: its death is reported.
    m.res.domain.destroy()
    with pytest.raises(BootFailure, match="no longer running"):
        m.watchdog()
    assert m.restarts == 1


def test_the_domain_ends_its_qemu_process_at_a_reset_and_restarts_appending(tiny):
    assert "<on_reboot>destroy</on_reboot>" in tiny._live_xml
    assert 'append="on"' in domain.appending_console(tiny._live_xml)
