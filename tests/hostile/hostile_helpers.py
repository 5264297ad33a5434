"""Helpers of the hostile-input tests: another user (a forked child that drops
to `nobody`), a real sshd on 127.0.0.1, and tiny real libvirt domains that never
boot an OS (started paused, no disk)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

from harness.seed import keys
from harness.vm import domain, runs, ssh

NOBODY = 65534
SSHD = Path("/usr/sbin/sshd")


def other_user_can(action: Callable[[], object]) -> bool:
    """Whether `action` succeeds for uid/gid 65534 (a forked child drops to it)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        except BaseException:  # any failure means "cannot"
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real sshd -----------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    dir: Path
    client: keys.KeyPair
    host_key: keys.KeyPair
    proc: subprocess.Popen | None = None
    log: Path | None = None  # when set, sshd logs every connection (VERBOSE) there

    def start(self, host_key: keys.KeyPair | None = None) -> Sshd:
        """(Re)start with `host_key` (default: the current one) on the same port."""
        self.stop()
        self.host_key = host_key or self.host_key
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key.private_path}", f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication yes", "UsePAM no",
            "StrictModes no", "KbdInteractiveAuthentication no",
            f"LogLevel {'VERBOSE' if self.log else 'ERROR'}", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        logging = ["-E", str(self.log)] if self.log else ["-e"]
        self.proc = subprocess.Popen([str(SSHD), "-D", *logging, "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while ssh.banner(self.port, timeout=0.5) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        return self

    def stop(self, sessions: bool = False) -> None:
        """Stop the listener; with `sessions`, also the per-connection sshd processes
        it forked (each by its pid), so connections already open drop too."""
        children = self._children() if sessions else []
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its pid
            self.proc.wait(10)
        self.proc = None

    def _children(self) -> list[int]:
        if not self.proc or self.proc.poll() is not None:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]


# -- tiny real domains -----------------------------------------------------------


def paused_domain(conn: libvirt.virConnect, run: runs.Run, name: str,
                  fw_cfg: tuple[tuple[str, Path], ...] = (),
                  owner: runs.Owner | None = None, port: int = 0) -> libvirt.virDomain:
    """A transient domain of `run`, made from the harness's own XML, with no disk:
    started paused, so QEMU opens its files but no OS runs (cheap under TCG)."""
    spec = paused_spec(run, name, fw_cfg, owner, port)
    return conn.createXML(domain.domain_xml(spec), libvirt.VIR_DOMAIN_START_PAUSED)


def paused_spec(run: runs.Run, name: str, fw_cfg: tuple[tuple[str, Path], ...] = (),
                owner: runs.Owner | None = None, port: int = 0) -> domain.DomainSpec:
    """The domain spec of paused_domain's domains (64 MiB, BIOS, no disk)."""
    return domain.DomainSpec(
        name=run.domain_name(name), run_id=run.id, memory_mib=64, firmware="bios", disks=(),
        console_log=run.dir / f"{name}.console.log", ssh_port=port or free_port(), fw_cfg=fw_cfg,
        owner=(owner or run.owner).attrs())


def domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False
