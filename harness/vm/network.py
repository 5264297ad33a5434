"""A cluster's private network: one VDE switch per cluster, guest to guest only.

Each member has a second NIC on QEMU's `vde` netdev, plugged into a `vde_switch`
process the harness starts for the cluster (Debian package vde2). The switch is
a userspace hub whose ports are unix sockets in one folder under the run's
folder: the host sees no tap, no bridge, no multicast and no address of the
private subnet, only those sockets. The user-mode NIC with restrict=on stays,
for the harness's SSH.

Addresses are fixed by a member's index (0-based): 10.87.0.(11+i)/24, MAC
52:54:00:87:00:(11+i). They are data of the seed (harness.seed.PrivateInterface),
so the guest configures them statically on first boot, in its own format.

A switch lives as long as its owner process: its stdin is a pipe whose only
writer is the harness, and vde_switch exits and removes its socket folder at
end of file on stdin (vde2's consmgmt module prints "EOF on stdin, cleaning up
and exiting"). So a killed run's switch goes with it. In case one outlives its
run anyway (a child that inherited the pipe), the switch's pid, start time and
executable are recorded in the run's folder (`switch-<name>.json`) and a sweep
of a dead run (harness.vm.runs.sweep) stops it, after checking that the pid
is still that vde_switch, and removes its folder with the run's.
"""

import contextlib
import grp
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt

from harness.log import log

SUBNET = ipaddress.ip_network("10.87.0.0/24")
FIRST_HOST = 11  # member i is SUBNET[FIRST_HOST + i]
MAX_MEMBERS = 64
VDE_SWITCH = "vde_switch"
RECORD_GLOB = "switch-*.json"
# sun_path is 108 bytes (unix(7)); the switch's data sockets are `<dir>/NNN.NNNNN`.
MAX_SOCKET_DIR = 108 - len("/ctl") - 16
STOP_PATIENCE = 5.0  # seconds a switch has to exit on SIGTERM before SIGKILL


class NetworkError(RuntimeError):
    """The private network cannot be made: vde_switch missing or failing, a bad path."""


def member_address(index: int) -> str:
    """Member `index`'s address on the private subnet, without prefix."""
    _check_index(index)
    return str(SUBNET[FIRST_HOST + index])


def member_interface(index: int) -> str:
    """Member `index`'s address with the subnet's prefix (10.87.0.11/24)."""
    return f"{member_address(index)}/{SUBNET.prefixlen}"


def member_mac(index: int) -> str:
    """Member `index`'s private NIC MAC: locally administered QEMU range 52:54:00."""
    _check_index(index)
    return f"52:54:00:87:00:{FIRST_HOST + index:02x}"


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_MEMBERS:
        raise NetworkError(f"member index {index}: a cluster has 0 to {MAX_MEMBERS - 1}")


def qemu_group(conn: libvirt.virConnect) -> str:
    """The group QEMU runs as on `conn`'s host (libvirt's DAC base label, e.g.
    +64055:+64055 for Debian's libvirt-qemu), by name, for vde_switch's --group."""
    caps = ET.fromstring(conn.getCapabilities())
    for model in caps.iter("secmodel"):
        if model.findtext("model") != "dac":
            continue
        for label in model.iter("baselabel"):
            if label.get("type") in ("qemu", "kvm") and label.text and ":" in label.text:
                gid = int(label.text.split(":")[1].lstrip("+"))
                try:
                    return grp.getgrgid(gid).gr_name
                except KeyError:
                    raise NetworkError(f"libvirt runs QEMU as gid {gid}, which has no "
                                       "group name here: vde_switch --group needs one"
                                       ) from None
    raise NetworkError("libvirt reports no DAC label for QEMU: cannot tell which group "
                       "must reach the switch's sockets")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


@dataclass(frozen=True)
class SwitchRecord:
    """What identifies a running switch: its pid, the pid's start time (clock ticks
    since boot, /proc/PID/stat field 22) and the executable it runs, and its
    socket folder."""

    name: str
    pid: int
    start: str
    exe: str
    dir: str
    pidns: int = 0  # the PID namespace `pid` is a number of (its inode)

    def is_running(self) -> bool:
        """Whether the pid is still this switch (not a recycled pid)."""
        return _start_time(self.pid) == self.start and _exe(self.pid) == self.exe


class Switch:
    """One cluster's VDE switch (a hub: every member sees every frame, as on one
    cable), started by `start()`, stopped by `stop()`; its sockets are in `dir`."""

    def __init__(self, name: str, sock_dir: Path, proc: subprocess.Popen, stdin_w: int,
                 record: Path, info: SwitchRecord):
        self.name, self.dir, self.proc = name, sock_dir, proc
        self._stdin_w, self.record_path, self.info = stdin_w, record, info

    @classmethod
    def start(cls, run_dir: Path, name: str, group: str) -> "Switch":
        """A switch `name` whose socket folder `run_dir/networks/<name>` QEMU's `group`
        may use (--group, --mode 0660, --dirmode 02770), recorded in `run_dir`."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            raise NetworkError(f"network name {name!r}: use lowercase letters, digits, '-'")
        binary = shutil.which(VDE_SWITCH)
        if binary is None:
            raise NetworkError(f"{VDE_SWITCH} is not installed: a cluster's private network "
                               "needs it (Debian package vde2; `make deps` installs it)")
        sock_dir = run_dir / "networks" / name
        if len(str(sock_dir)) > MAX_SOCKET_DIR or "," in str(sock_dir):
            raise NetworkError(f"switch folder {sock_dir}: longer than {MAX_SOCKET_DIR} "
                               "bytes or has a ',' (QEMU's option parser would split it); "
                               "set HARNESS_RUNTIME to a short path without ','")
        record = run_dir / f"switch-{name}.json"
        sock_dir.parent.mkdir(mode=0o711, exist_ok=True)  # QEMU's user passes through
        read, write = os.pipe()  # not inheritable: only this process writes
        try:
            proc = subprocess.Popen(
                [binary, "--hub", "--sock", str(sock_dir), "--mode", "0660",
                 "--dirmode", "02770", "--group", group],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)  # a Ctrl-C to the harness is the harness's
        finally:
            os.close(read)
        try:
            info = cls._wait_up(proc, name, sock_dir)
            record.write_text(json.dumps(asdict(info)))
        except BaseException:
            os.close(write)
            _end(proc)
            raise
        log.info("network %s: vde_switch pid %d, sockets in %s", name, proc.pid, sock_dir)
        return cls(name, sock_dir, proc, write, record, info)

    @staticmethod
    def _wait_up(proc: subprocess.Popen, name: str, sock_dir: Path,
                 patience: float = 10.0) -> SwitchRecord:
        """The switch's record once its control socket exists; NetworkError with its
        own words if it exits first."""
        deadline = time.monotonic() + patience
        while not (sock_dir / "ctl").is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                _end(proc)
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise NetworkError(f"network {name}: vde_switch did not start "
                                   f"(exit {proc.returncode}): {err or 'no message'}")
            time.sleep(0.05)
        start, exe = _start_time(proc.pid), _exe(proc.pid)
        if start is None or exe is None:
            raise NetworkError(f"network {name}: vde_switch pid {proc.pid} vanished")
        return SwitchRecord(name, proc.pid, start, exe, str(sock_dir), _pidns())

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """End of file on its stdin, then SIGTERM, then SIGKILL; the socket folder and
        the record go. Safe to call twice."""
        if self._stdin_w >= 0:
            os.close(self._stdin_w)
            self._stdin_w = -1
        _end(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.record_path.unlink(missing_ok=True)


def _end(proc: subprocess.Popen) -> None:
    """Wait briefly for our child to exit (it does at EOF on stdin), else TERM, KILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(STOP_PATIENCE)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stderr:
        proc.stderr.close()


def _stop_pid(rec: SwitchRecord) -> bool:
    """SIGTERM, then SIGKILL, a switch that is not our child; True if it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not rec.is_running():
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)
        deadline = time.monotonic() + STOP_PATIENCE
        while rec.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
    return not rec.is_running()


def read_records(run_dir: Path) -> list[SwitchRecord]:
    """The switch records of a run folder; one that is not a record is skipped."""
    found: list[SwitchRecord] = []
    if run_dir.is_symlink() or not run_dir.is_dir():  # never followed: not ours to read
        return found
    for path in run_dir.glob(RECORD_GLOB):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            found.append(SwitchRecord(str(data["name"]), int(data["pid"]), str(data["start"]),
                                      str(data["exe"]), str(data["dir"]),
                                      int(data.get("pidns", 0))))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("clean: %s is not a switch record: left alone", path)
    return found


def sweep_run(run_dir: Path) -> list[str]:
    """Stop the switches a dead run left running (each checked to still be that
    vde_switch: pid, start time, executable), before its folder is removed. Only
    a switch of this host's PID namespace is stopped: a pid is this namespace's."""
    removed = []
    for rec in read_records(run_dir):
        if Path(rec.exe).name != VDE_SWITCH:
            log.warning("clean: %s names %s, not %s: left alone", run_dir, rec.exe, VDE_SWITCH)
            continue
        if rec.pidns != _pidns():
            log.warning("clean: switch %s (pid %d) of %s runs in another PID namespace: "
                        "left alone", rec.name, rec.pid, run_dir)
            continue
        if not rec.is_running():
            continue
        if _stop_pid(rec):
            removed.append(f"switch {rec.name} (vde_switch pid {rec.pid})")
        else:
            log.warning("clean: switch %s (pid %d) did not stop", rec.name, rec.pid)
    return removed
