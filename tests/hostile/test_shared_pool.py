"""Two runs share libvirt's `harness` pool. libvirt refuses to re-read a pool while
any client is building a volume in it; a run that starts (and sweeps) while another
creates its overlays must wait that out, not fail every test of its session. Real
libvirt: one connection creates and deletes volumes, the other sweeps."""

from __future__ import annotations

import secrets
import threading
import time

import libvirt

from harness.vm import runs, storage


def test_a_run_starting_while_another_builds_volumes_sweeps_without_error(runtime):
    busy, sweeping = libvirt.open("qemu:///system"), libvirt.open("qemu:///system")
    prefix = f"pooltest-{secrets.token_hex(4)}-"
    stop = threading.Event()
    built = [0]

    def build_volumes() -> None:  # the other run: overlays made one after the other
        p = storage.pool(busy)
        while not stop.is_set():
            vol = p.createXML(storage._volume_xml(f"{prefix}{built[0]}", 64 << 20, "qcow2"), 0)
            vol.delete(0)
            built[0] += 1
            stop.wait(0.05)

    other = threading.Thread(target=build_volumes)
    other.start()
    try:  # ten sweeps at least, and as many as it takes to overlap five builds
        sweeps, deadline = 0, time.monotonic() + 120
        while (sweeps < 10 or built[0] < 5) and time.monotonic() < deadline:
            runs.sweep(sweeping)
            sweeps += 1
    finally:
        stop.set()
        other.join()
        storage.delete_volumes(sweeping, prefix)
        busy.close()
        sweeping.close()
    assert built[0] >= 5, "the other run should have built volumes all along"
