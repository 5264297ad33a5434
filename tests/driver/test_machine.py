"""The VM driver itself: it fails fast with the evidence, verifies the guest,
and leaves nothing behind. These boot real VMs of the session's distro."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import libvirt
import pytest

from harness.paths import REPO, runtime_dir
from harness.seed import keys
from harness.vm import console, storage, timeouts
from harness.vm.machine import BootFailure, CommandFailed, KernelBoot, MachineError

pytestmark = pytest.mark.vm


def test_kernel_panic_fails_the_boot_long_before_its_timeout_and_quotes_the_panic(
        harness_session, distro, local_image, accelerator):
    if local_image.kernel is None:
        pytest.skip(f"{distro.name}: no separate kernel to boot directly")
    # No initrd and a root that does not exist: the kernel panics at its root mount.
    panic = KernelBoot(local_image.kernel, "console=ttyS0 root=/dev/nonexistent panic=0")
    m = harness_session.new_machine("panic", harness_session.spec(distro, kernel_boot=panic))
    with pytest.raises(BootFailure, match="kernel-panic") as failure:
        m.start()
    # The console watch ended it (a BootFailure naming the panic), not the boot's
    # timeout (a MachineError saying "not within"): proven by what, not how fast.
    assert "Kernel panic - not syncing" in str(failure.value)
    assert "not within" not in str(failure.value)
    assert m.res.domain is None and not m.res.volumes and m.res.port is None


def test_domain_destroyed_while_waiting_fails_within_seconds(harness_session, distro,
                                                             accelerator):
    m = harness_session.new_machine("destroyed", harness_session.spec(distro))

    def destroy_once_running():
        for _ in range(300):
            if m.res.domain is not None and m.res.domain.isActive():
                time.sleep(2)
                m.res.domain.destroy()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=destroy_once_running)
    killer.start()
    with pytest.raises(BootFailure, match="no longer running") as failure:
        m.start()
    killer.join()
    assert "not within" not in str(failure.value)  # the dead domain ended it, not time


def _qemu_pid(m) -> int:
    return int(Path(f"/run/libvirt/qemu/{m.res.domain.name()}.pid").read_text())


@pytest.mark.allow("failed-units")
def test_qemu_killed_mid_command_is_a_machine_error_with_the_console(machine_factory):
    m = machine_factory("victim")
    pid = _qemu_pid(m)
    threading.Timer(3, os.kill, (pid, signal.SIGKILL)).start()  # this test's own domain
    with pytest.raises(MachineError) as failure:
        m.run("sleep 120", timeout=300)
    message = str(failure.value)
    # Ended by the dead domain: the error says so and quotes the console.
    assert "no longer running" in message and "last console lines:" in message


def _counted_handshakes(m) -> list[float]:
    """Each SSH handshake the machine's connection starts (the harness's own
    method, wrapped to count; paramiko does the handshake)."""
    calls: list[float] = []
    connect = m._ssh._connect

    def counted(timeout: float):
        calls.append(timeout)
        return connect(timeout)

    m._ssh._connect = counted
    return calls


def test_wrong_host_key_fails_at_the_first_handshake_not_after_the_boot_timeout(
        machine_factory, tmp_path):
    m = machine_factory("impostor")
    real = m.host_key
    m.host_key = keys.generate(tmp_path, "other_host_key", "impostor")  # pin the wrong key
    m._connect_ssh()
    handshakes = _counted_handshakes(m)
    with pytest.raises(MachineError, match="host key"):
        m.wait_until_succeeds("true")
    with pytest.raises(MachineError, match="host key"):
        m.run("true")
    assert len(handshakes) == 2  # one each: a refused host key is never tried again
    m.host_key = real  # the guest is fine: let teardown's checks in
    m._connect_ssh()


def test_shutdown_powers_off_and_leaves_nothing_running(machine_factory):
    m = machine_factory("shutdown")
    m.shutdown()
    assert not m.running() and m.res.domain is None
    m.destroy()
    assert not m.res.volumes and m.res.port is None


def test_wait_for_unit_fails_at_once_on_a_failed_or_inactive_unit(machine):
    # A oneshot's start job ends when `false` has exited, so the unit has failed by
    # the time systemd-run returns; a simple service would still be "active".
    machine.run("systemd-run --unit=harness-fails --property=Type=oneshot false")
    # CommandFailed with the unit's state: the wait ended on it, not on its timeout
    # (a MachineError saying "not within").
    with pytest.raises(CommandFailed, match=r"harness-fails\.service failed"):
        machine.wait_for_unit("harness-fails.service")
    with pytest.raises(CommandFailed, match="inactive and no job will start it"):
        machine.wait_for_unit("harness-never-started.service")
    machine.succeed("systemctl reset-failed harness-fails.service")
    machine.wait_for_unit("ssh.service")


def test_an_attached_disk_is_in_the_guest_when_attach_returns(machine_factory, tmp_path):
    machine = machine_factory("attach")  # its udev is held and a disk left attached
    payload = tmp_path / "payload.img"
    payload.write_bytes(b"harness-payload\n".ljust(1 << 20, b"\0"))
    # udev makes the by-id link; holding its queue for 5 s stands for a guest slow
    # to get there (under load, CI saw no link 0.7 s after the hot-plug).
    machine.succeed("udevadm control --stop-exec-queue && "
                    "systemd-run --on-active=5 --timer-property=AccuracySec=100ms "
                    "udevadm control --start-exec-queue")
    path = machine.attach_disk(payload, "payload-attach-test")
    # Asked once, at once: a caller uses the path straight away (refos-update does).
    assert machine.succeed(f"head -c 16 {path}") == "harness-payload\n"


def test_a_reset_starts_a_new_qemu_process_and_a_silent_firmware_is_power_cycled(
        machine_factory, monkeypatch):
    m = machine_factory("stuck-reset")
    first = _qemu_pid(m)
    monkeypatch.setitem(timeouts.BASE, "firmware", 2)  # 10 s under TCG
    frozen = threading.Event()

    def freeze_the_new_process() -> None:
        # A paused vCPU prints nothing, as OVMF crawling after a reset did. The new
        # process is paused before its firmware's first line, seconds in under TCG.
        deadline = time.monotonic() + timeouts.get("reboot")
        while time.monotonic() < deadline:
            if m.restarts:
                m.res.domain.suspend()
                frozen.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=freeze_the_new_process, daemon=True)
    watcher.start()
    m.reboot()
    watcher.join()
    assert frozen.is_set(), "the guest's reset never started a new QEMU process"
    # The reset ended the first process; the watchdog started a second, then power-
    # cycled it (a third) when its firmware stayed silent.
    assert (m.restarts, m.power_cycles) == (1, 1)
    assert _qemu_pid(m) != first
    # One console log across the processes: the reset, then the new boot.
    before, _, after = m.console_text().rpartition(console.RESET_LINE)
    assert before and "Linux version" in after


def test_sigkilled_run_is_fully_cleaned_by_harness_clean(libvirt_conn, distro, local_image):
    """A pytest run killed with SIGKILL mid-boot leaves a domain, volumes and a
    port lock; `harness clean` removes them all and nothing else."""
    env = dict(os.environ, HARNESS_TEST_HOLD="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--distro={distro.name}", str(REPO / "tests/driver/hold_a_machine.py")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        dom = _wait_for_domain(libvirt_conn, proc.pid, 120)
        name = dom.name()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    run_id = name.split("-")[1]
    assert _names(libvirt_conn, run_id), "the killed run should have left volumes"
    out = subprocess.run([str(REPO / ".venv/bin/harness"), "clean"], capture_output=True,
                         text=True, check=True).stdout
    assert "removed" in out
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.lookupByName(name)
    assert not _names(libvirt_conn, run_id)
    assert not (runtime_dir() / "runs" / run_id).exists()
    assert not [p for p in (runtime_dir() / "ports").glob("*.lock") if _unlocked(p)]


def _wait_for_domain(conn, pid: int, timeout: float) -> libvirt.virDomain:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith("harness-"):
                continue
            owner = runtime_dir() / "runs" / dom.name().split("-")[1] / "owner.json"
            if owner.exists() and f'"pid": {pid}' in owner.read_text():
                return dom
        time.sleep(0.5)
    raise AssertionError(f"pytest {pid} made no domain within {timeout}s")


def _names(conn, run_id: str) -> list[str]:
    pool = storage.pool(conn)
    storage.refresh(pool)
    return [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(f"run-{run_id}-")]


def _unlocked(lock) -> bool:
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
