"""A check reports and the watchdog acts: Machine.check_alive() never changes the
guest, while the watchdog turn every wait takes power-cycles a reset the firmware
never answered. Real libvirt: a tiny domain with no disk, started paused."""

import time
from pathlib import Path

import libvirt

from harness import catalog
from harness.images import LocalImage
from harness.vm import domain
from harness.vm.machine import MachineSpec


def test_check_alive_only_reports_and_the_watchdog_power_cycles_a_stuck_reset(
        harness_session):
    s = harness_session
    # refos boots with UEFI, where a stuck reset is watched for; no image is opened here.
    m = s.new_machine("watchdog", MachineSpec(catalog.get("refos"), LocalImage(Path("unused"), "")))
    m.res.port = s.forward_port()
    spec = domain.DomainSpec(
        name=s.run.domain_name(m.id), run_id=s.run.id, memory_mib=64, firmware="bios",
        disks=(), console_log=m.console_log, ssh_port=m.port, owner=s.run.owner.attrs())
    m.res.domain = s.conn.createXML(domain.domain_xml(spec), libvirt.VIR_DOMAIN_START_PAUSED)
    before = m.res.domain.ID()
    m.console_log.write_text("Linux version 6.1.0\nreboot: machine restart\n")
    # Injected: the firmware silent since that reset for an hour (a crawl under TCG
    # that cannot be brought about on demand).
    m._console_seen = (len(m.console_text()), time.monotonic() - 3600)

    m.check_alive()
    assert (m.power_cycles, m.res.domain.ID()) == (0, before)

    m.watchdog()
    assert m.power_cycles == 1 and m.res.domain.ID() != before and m.running()
    m.destroy()
