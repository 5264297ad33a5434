"""The Machine: one booted guest and the verbs a test uses on it.

In the spirit of the NixOS test driver: run / succeed / fail / wait_until_succeeds
/ wait_for_unit / reboot / shutdown / copy. Every wait is one polling helper that
also watches the domain and its console, so a dead domain or a kernel panic ends
the wait at once with the console's last lines instead of a timeout.
"""

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt
import paramiko
import tenacity

from harness import seed
from harness.catalog import Distro
from harness.log import log, step
from harness.plugin import evidence
from harness.seed import keys
from harness.vm import domain, runs, snapshot, ssh, storage, timeouts

# Console lines that end a boot: waiting longer cannot help.
FATAL = [
    # Ignition's own verdict (coreos/ignition v2.14.0 internal/main.go logs "Ignition
    # failed: ..." at CRITICAL); refos-ignition's initramfs forwards its journal to the
    # console. First, so the quote is Ignition's error and not the emergency shell after it.
    (re.compile(r"ignition\[\d+\]: .*Ignition failed: .*"), "Ignition failed"),
    (evidence.BADNESS["kernel-panic"], "kernel panic"),
    (evidence.BADNESS["emergency-shell"], "emergency shell"),
    (re.compile(r"Give root password for maintenance.*|\(initramfs\) "), "emergency shell"),
    # dracut's (modules.d/98dracut-systemd/dracut-emergency.sh), as refos-ignition has.
    (re.compile(r"Entering emergency mode\. Exit the shell to continue\."), "emergency shell"),
]
SSH_ERRORS = (OSError, EOFError, TimeoutError, paramiko.SSHException)


class MachineError(RuntimeError):
    pass


class BootFailure(MachineError):
    """The guest cannot come up: the domain died or the console shows a fatal state."""


class CommandFailed(MachineError):
    pass


@dataclass(frozen=True)
class KernelBoot:
    """Boot a local kernel directly (no firmware, no boot loader)."""

    kernel: Path
    cmdline: str
    initrd: Path | None = None


@dataclass
class Resources:
    """What this machine created and teardown must remove."""

    domain: libvirt.virDomain | None = None
    port: runs.PortLock | None = None
    volumes: list[str] = field(default_factory=list)


class Machine:
    def __init__(self, name: str, distro: Distro, run: runs.Run, conn: libvirt.virConnect,
                 image: Path, image_key: str, accel: str, extra_config: dict | None = None,
                 kernel_boot: KernelBoot | None = None, seed_format: str = ""):
        self.name, self.distro, self.run_ = name, distro, run
        # Another first-boot format than the catalog's (refos reads NoCloud and config-2).
        self.seed_format = seed_format
        self.conn, self.image, self.image_key, self.accel = conn, image, image_key, accel
        self.extra_config = extra_config or {}
        self.kernel_boot = kernel_boot
        self.direct: domain.DirectBoot | None = None
        self.dir = _unique_dir(run.dir / name)
        self.id = self.dir.name  # names its volumes: unique within the run
        self.hostname = name  # a restored machine keeps its template's
        self.template: Machine | None = None  # the machine it was restored from
        self.console_log = self.dir / "console.log"
        # Seconds from domain start to each readiness layer (kernel, ssh, command, ready;
        # restore for a restored machine); rebootN: how long reboot N took.
        self.timings: dict[str, float] = {}
        self.res = Resources()
        self._console_mark = 0
        self._ssh: ssh.Connection | None = None
        self.host_key: keys.KeyPair | None = None
        self.client_key: keys.KeyPair | None = None
        self.xml = ""

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "Machine":
        """Create everything, boot, wait until ready; on any failure remove it all."""
        try:
            with step(f"boot {self.distro.name} ({self.accel})", self.name):
                self._provision()
                self._boot()
                self.wait_ready()
        except BaseException:
            self.destroy()
            raise
        return self

    def _provision(self) -> None:
        keydir = self.dir / "keys"
        self.client_key = keys.generate(keydir, "id_ed25519", f"harness-{self.run_.id}")
        self.host_key = keys.generate(keydir, "ssh_host_ed25519_key", self.name)
        (keydir / "known_hosts").write_text("")  # written once the port is known
        intent = seed.Intent(hostname=self.hostname, user=self.distro.boot.ssh_user,
                             authorized_keys=(self.client_key.public,), host_key=self.host_key,
                             instance_id=f"{self.run_.id}-{self.name}", extra=self.extra_config)
        fmt = self.seed_format or self.distro.boot.seed
        options = self.distro.boot.seed_options if fmt == self.distro.boot.seed else {}
        self.seed = seed.build(fmt, intent, self.dir, options)
        pool = storage.pool(self.conn)
        base, vsize = storage.base_volume(self.conn, self.image, self.image_key)
        self.res.volumes.append(self.volume(""))
        if self.seed.disk:
            storage.upload(pool, self.volume("seed.iso"), self.seed.disk)
        storage.overlay(self.conn, self.volume("disk.qcow2"), base, vsize)
        if kb := self.kernel_boot:
            kernel = storage.upload(pool, self.volume("kernel"), kb.kernel).path()
            initrd = storage.upload(pool, self.volume("initrd"), kb.initrd).path() \
                if kb.initrd else ""
            cmdline = " ".join(a for a in (kb.cmdline, self.seed.kernel_args) if a)
            self.direct = domain.DirectBoot(kernel, cmdline, initrd)

    def _spec(self, port: int) -> domain.DomainSpec:
        disks = [domain.Disk(storage.POOL, self.volume("disk.qcow2"), "vda")]
        if self.seed.disk:
            disks.append(domain.Disk(storage.POOL, self.volume("seed.iso"), "vdb", fmt="raw",
                                     readonly=True))
        return domain.DomainSpec(
            name=self.run_.domain_name(self.id), run_id=self.run_.id,
            memory_mib=self.distro.boot.memory_mib, firmware=self.distro.boot.firmware,
            disks=tuple(disks), console_log=self.console_log, ssh_port=port,
            nvram=Path(storage.POOL_DIR) / self.volume("VARS.fd"), accel=self.accel,
            fw_cfg=self.seed.fw_cfg, direct=self.direct)

    def _boot(self) -> None:
        for attempt in range(3):
            self.res.port = runs.PortLock()
            self.xml = domain.domain_xml(self._spec(self.res.port.port))
            (self.dir / "domain.xml").write_text(self.xml)
            try:
                self.res.domain = self.conn.createXML(self.xml, 0)
                break
            except libvirt.libvirtError as e:
                self.res.port.release()
                self.res.port = None
                if "host forwarding" not in str(e) or attempt == 2:
                    raise
                log.info("%s: port taken by someone else, retrying on another", self.name)
        self.started = time.monotonic()
        self._connect_ssh()

    def _connect_ssh(self) -> None:
        known = self.dir / "keys" / "known_hosts"
        known.parent.mkdir(mode=0o700, exist_ok=True)
        known.write_text(f"[127.0.0.1]:{self.port} {self.host_key.public}\n")
        self._ssh = ssh.Connection(self.port, self.distro.boot.ssh_user, self.client_key,
                                   self.host_key)

    def restore(self, saved) -> "Machine":
        """Become a copy of a saved machine (harness.vm.snapshot), on a new overlay."""
        template = saved.template
        self.client_key, self.host_key, self.seed = (template.client_key, template.host_key,
                                                     template.seed)
        self.hostname = template.hostname
        self.template = template
        try:
            with step("restore from saved memory image", self.name):
                self.res.volumes.append(self.volume(""))
                storage.overlay(self.conn, self.volume("disk.qcow2"), saved.disk_path,
                                saved.vsize)
                nvram = storage.clone(self.conn, saved.nvram_volume, self.volume("VARS.fd")) \
                    if saved.nvram_volume else ""
                self.res.port = runs.PortLock()
                self.xml = snapshot.retarget(saved.xml, self.volume("disk.qcow2"), nvram,
                                             self.console_log, self.port, self.run_.id)
                (self.dir / "domain.xml").write_text(self.xml)
                self.started = time.monotonic()
                self.conn.restoreFlags(str(saved.file), self.xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
                self.res.domain = self.conn.lookupByName(saved.domain_name)
                self._mark("restore")
                self._connect_ssh()
                self.poll("first command", lambda: self._ssh.run(
                    "true", timeouts.get("ssh_command"), sudo=False).status == 0,
                    timeouts.get("boot"))
                self._mark("command")
                # The guest slept through the time since the save.
                self.succeed(f"date -u -s @{time.time():.3f} >/dev/null")
        except BaseException:
            self.destroy()
            raise
        return self

    @property
    def boot_timings(self) -> dict[str, float]:
        """The phases of the cold boot behind this machine (its template's, if restored)."""
        return self.template.timings if self.template else self.timings

    def volume(self, kind: str) -> str:
        """This machine's volume of a kind; with kind "" the prefix of them all
        (the "." keeps machine `web` from matching machine `web-2`)."""
        return f"{self.run_.volume_prefix()}{self.id}.{kind}"

    @property
    def port(self) -> int:
        return self.res.port.port

    def ssh_command(self) -> str:
        return ssh.ssh_command(self.port, self.distro.boot.ssh_user,
                               self.client_key.private_path, self.dir / "keys" / "known_hosts")

    def destroy(self) -> None:
        """Remove domain, volumes and port; safe to call twice and on a half-made machine."""
        if self._ssh:
            self._ssh.close()
        if self.res.domain is not None:
            runs.destroy_domain(self.res.domain)
            self.res.domain = None
        for prefix in self.res.volumes:
            storage.delete_volumes(self.conn, prefix)
        self.res.volumes.clear()
        if self.res.port:
            self.res.port.release()
            self.res.port = None

    def __enter__(self) -> "Machine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    def attach_disk(self, source: Path, serial: str) -> str:
        """Hot-plug a local file as a read-only virtio disk; returns its guest path.

        Payloads too big for SSH under emulation (update images) reach the guest
        this way; the volume is removed with the machine."""
        name = self.volume(serial)
        storage.upload(storage.pool(self.conn), name, source)
        taken = {t.get("dev") for t in ET.fromstring(self.res.domain.XMLDesc(0)).iter("target")}
        target = next(f"vd{c}" for c in "cdefghijklmnop" if f"vd{c}" not in taken)
        xml = domain.disk_xml(domain.Disk(storage.POOL, name, target, fmt="raw", readonly=True,
                                          serial=serial))
        self.res.domain.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return f"/dev/disk/by-id/virtio-{serial}"

    # -- evidence --------------------------------------------------------------

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 25) -> str:
        tail = self.console_text().splitlines()[-lines:]
        return "\n".join(f"    | {line}" for line in tail)

    def running(self) -> bool:
        """Whether the domain runs; a transient domain that stopped no longer exists."""
        try:
            return self.res.domain is not None and bool(self.res.domain.isActive())
        except libvirt.libvirtError:
            return False

    def check_alive(self) -> None:
        """Raise BootFailure if waiting for this guest can no longer succeed."""
        if not self.running():
            raise BootFailure(f"{self.name}: the domain is no longer running\n"
                              f"  last console lines:\n{self.console_tail()}")
        text = self.console_text()[self._console_mark:]
        for pattern, what in FATAL:
            if m := pattern.search(text):
                raise BootFailure(f"{self.name}: {what} on the console: {m.group(0).strip()}\n"
                                  f"  last console lines:\n{self.console_tail()}")

    def wait_for_console(self, pattern: str, timeout: float | None = None) -> str:
        regex = re.compile(pattern)

        def seen() -> str | None:
            m = regex.search(self.console_text()[self._console_mark:])
            return m.group(0) if m else None

        return self.poll(f"console shows /{pattern}/", seen, timeout or timeouts.get("boot"))

    # -- waiting ---------------------------------------------------------------

    def poll(self, what: str, probe: Callable[[], object], timeout: float,
             interval: float = 0.2):
        """Call `probe` until it returns something true; SSH errors count as "not yet".

        Stops at once when check_alive() says the guest cannot come up."""
        def attempt():
            self.check_alive()
            return probe()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(interval),
            retry=tenacity.retry_if_result(lambda r: not r)
            | tenacity.retry_if_exception_type(SSH_ERRORS),
            reraise=True)
        try:
            with step(what, self.name):
                return retrying(attempt)
        except tenacity.RetryError:
            raise MachineError(f"{self.name}: {what}: not within {timeout:.0f}s\n"
                               f"  last console lines:\n{self.console_tail()}") from None
        except SSH_ERRORS as e:
            raise MachineError(f"{self.name}: {what}: not within {timeout:.0f}s: {e}\n"
                               f"  last console lines:\n{self.console_tail()}") from e

    def _mark(self, phase: str) -> None:
        self.timings[phase] = round(time.monotonic() - self.started, 2)

    def wait_ready(self) -> None:
        """Layered readiness; each layer is logged with its time."""
        self.check_alive()
        self.wait_for_console(r"Linux version \S+")
        self._mark("kernel")
        self.poll("SSH banner", lambda: ssh.banner(self.port), timeouts.get("boot"))
        self._mark("ssh")
        self.poll("first command", lambda: self._ssh.run("true", timeouts.get("ssh_command"),
                                                          sudo=False).status == 0,
                  timeouts.get("boot"))
        self._mark("command")
        self._wait_boot_finished()
        self._mark("ready")
        log.info("%s: ready: %s", self.name,
                 ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))

    def _wait_boot_finished(self) -> None:
        """The catalog's "boot finished" commands; a failure names the failed units."""
        for cmd in self.distro.boot.ready:
            with step(f"boot finished: {_short(cmd)}", self.name):
                result = self.run(cmd, timeout=timeouts.get("ready"))
            if result.status != 0:
                failed = self.run("systemctl --failed --no-legend --plain; "
                                  "journalctl -b -p warning --no-pager -n 30").stdout
                raise BootFailure(f"{self.name}: boot did not finish cleanly: "
                                  f"{result.describe(cmd)}\n"
                                  f"--- failed units, warnings ---\n{failed}")

    # -- commands --------------------------------------------------------------

    def run(self, cmd: str, timeout: float | None = None, stdin: bytes | None = None
            ) -> ssh.Result:
        """Run `cmd` as root in the guest; exit status, stdout and stderr."""
        started = time.monotonic()
        result = self._ssh.run(cmd, timeout or timeouts.get("ssh_command"), stdin=stdin)
        log.info("%s: $ %s -> %d (%.1fs)", self.name, _short(cmd), result.status,
                 time.monotonic() - started)
        return result

    def succeed(self, cmd: str, timeout: float | None = None, stdin: bytes | None = None) -> str:
        result = self.run(cmd, timeout, stdin)
        if result.status != 0:
            raise CommandFailed(f"{self.name}: {result.describe(cmd)}")
        return result.stdout

    def fail(self, cmd: str, timeout: float | None = None) -> ssh.Result:
        result = self.run(cmd, timeout)
        if result.status == 0:
            raise CommandFailed(f"{self.name}: expected failure, but {result.describe(cmd)}")
        return result

    def wait_until_succeeds(self, cmd: str, timeout: float | None = None) -> str:
        def ok():
            r = self._ssh.run(cmd, timeouts.get("ssh_command"))
            return r.stdout if r.status == 0 else None

        return self.poll(f"until `{_short(cmd)}` succeeds", ok, timeout or timeouts.get("ready"))

    def wait_for_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait for a unit to be active; a failed unit ends the wait at once."""
        def active():
            state = self._ssh.run(f"systemctl is-active {shlex.quote(unit)}",
                                  timeouts.get("ssh_command")).stdout.strip()
            if state == "failed":
                status = self._ssh.run(f"systemctl status --no-pager -n 20 {shlex.quote(unit)}",
                                       timeouts.get("ssh_command")).stdout
                raise CommandFailed(f"{self.name}: unit {unit} failed:\n{status}")
            return state == "active"

        self.poll(f"unit {unit} active", active, timeout or timeouts.get("unit"))

    def boot_id(self) -> str:
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    def reboot(self, settle: Callable[[], bool] | None = None, boots: int = 1) -> None:
        """Reboot and wait for a new boot id; the dropped connection is expected.

        `settle`, when given, must also hold before the wait ends: for boots that
        reboot again by themselves (a trial boot that fails its health check),
        with a budget of `boots` boots."""
        old = self.boot_id()
        self._console_mark = len(self.console_text())
        self._ssh.run("systemd-run --no-block --on-active=1 systemctl reboot",
                      timeouts.get("ssh_command"))
        self._ssh.close()

        def new_boot():
            r = self._ssh.run("cat /proc/sys/kernel/random/boot_id", timeouts.get("ssh_command"))
            if r.status != 0 or r.stdout.strip() in ("", old):
                return False
            return settle is None or settle()

        budget = (timeouts.get("reboot") + timeouts.get("boot")) * boots
        started = time.monotonic()
        self.poll("reboot (new boot id)" if settle is None else "reboot until settled",
                  new_boot, budget)
        self._wait_boot_finished()
        reboots = [k for k in self.timings if k.startswith("reboot")]
        self.timings[f"reboot{len(reboots) + 1}"] = round(time.monotonic() - started, 2)

    def shutdown(self) -> None:
        self._ssh.run("systemd-run --no-block --on-active=1 systemctl poweroff",
                      timeouts.get("ssh_command"))
        self._ssh.close()
        def off():
            return not self.running()

        tenacity.Retrying(stop=tenacity.stop_after_delay(timeouts.get("shutdown")),
                          wait=tenacity.wait_fixed(0.5), retry=tenacity.retry_if_result(
                              lambda r: not r), reraise=True)(off)

    def copy_to(self, local: Path, remote: str) -> None:
        with step(f"copy {local} -> {remote}", self.name):
            self.succeed(f"cat > {shlex.quote(remote)}", stdin=local.read_bytes())

    def copy_from(self, remote: str, local: Path) -> None:
        with step(f"copy {remote} -> {local}", self.name):
            sftp = self._ssh.sftp(timeouts.get("ssh_command"))
            try:
                tmp = f"/tmp/harness-copy-{self.run_.id}"
                self.succeed(f"cp {shlex.quote(remote)} {tmp} && chmod 644 {tmp}")
                sftp.get(tmp, str(local))
                self.succeed(f"rm -f {tmp}")
            finally:
                sftp.close()


def _unique_dir(path: Path) -> Path:
    """A new directory: `path`, or `path_2`, `path_3`, ... when a machine of that
    name existed before in this run."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}_{n}")
        try:
            candidate.mkdir(mode=0o711)
            return candidate
        except FileExistsError:
            continue
    raise MachineError(f"too many machines named {path.name}")


def _short(cmd: str, width: int = 80) -> str:
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."
