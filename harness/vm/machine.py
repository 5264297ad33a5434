"""The Machine: one booted guest and the verbs a test uses on it.

In the spirit of the NixOS test driver: run / succeed / fail / wait_until_succeeds
/ wait_for_unit / reboot / shutdown. Every command and every wait goes
through one watchdog (`_watch` and `_ssh_run`): it also watches the domain and
its console, so a dead domain, a dropped connection, a refused host key or a
kernel panic ends with a MachineError quoting the console's last lines, at once,
instead of a timeout or a raw paramiko exception.
"""

import dataclasses
import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from xml.etree import ElementTree as ET

import libvirt
import paramiko

from harness import seed
from harness.catalog import Distro
from harness.log import log, step
from harness.seed import keys
from harness.vm import console, domain, readiness, remote, runs, snapshot, ssh, storage, timeouts
from harness.vm.accel import tb_cache_mib

if TYPE_CHECKING:
    from harness.images import LocalImage

# What a lost or not-yet-listening guest raises; while polling these mean "not yet".
SSH_ERRORS = (OSError, EOFError, TimeoutError, paramiko.SSHException)


class MachineError(RuntimeError):
    pass


class BootFailure(MachineError):
    """The guest cannot come up or is gone: the domain died or the console shows a
    fatal state."""


class CommandFailed(MachineError):
    pass


@dataclass(frozen=True)
class KernelBoot:
    """Boot a local kernel directly (no firmware, no boot loader)."""

    kernel: Path
    cmdline: str
    initrd: Path | None = None


@dataclass(frozen=True)
class Member:
    """A cluster member's place (harness.vm.cluster): its host name and its private
    interface are written into its seed, so they are part of its spec and of its
    save's key. Each member is a spec of its own: its own save, its own identity."""

    hostname: str
    private: seed.PrivateInterface


@dataclass(frozen=True, eq=False)
class MachineSpec:
    """Everything that makes two machines identical at boot, so one saved machine
    can stand in for the other (harness.vm.snapshot)."""

    distro: Distro
    image: "LocalImage"
    seed_format: str = ""  # another first-boot format than the catalog's
    extra_config: dict | str | None = None
    kernel_boot: KernelBoot | None = None
    member: Member | None = None  # a cluster member's host name and private interface

    @property
    def seed(self) -> str:
        return self.seed_format or self.distro.boot.seed

    def key(self) -> str:
        """Names what the guest is made of: the image (a build's recipe hash, a
        download's digest), the distro entry, the seed format and extra configuration,
        the kernel boot, a cluster member's place. The code that shapes a guest is in the saves' key
        (harness.vm.savecache.guest_digest), not a version string that never moves."""
        data = json.dumps([self.image.key, self.distro.name, self.seed_format,
                           self.extra_config, self.kernel_boot,
                           *([self.member] if self.member else [])],
                          sort_keys=True, default=str)
        return hashlib.sha256(data.encode()).hexdigest()[:12]


class Host(Protocol):
    """What a machine needs from the session that makes it (harness.vm.session.Session,
    the one module that knows both): the libvirt connection and the run, the
    accelerator, a port for the SSH forward, on a remote hypervisor the jump host, and
    whether guests reach the network (--open-network)."""

    conn: libvirt.virConnect
    run: runs.Run
    jump: remote.Jump | None

    @property
    def accel(self) -> str: ...

    @property
    def libvirt_uri(self) -> str: ...

    @property
    def open_network(self) -> bool: ...

    def forward_port(self) -> runs.PortLock | remote.RemotePort: ...


@dataclass
class Resources:
    """What this machine created and teardown must remove."""

    domain: libvirt.virDomain | None = None
    port: runs.PortLock | remote.RemotePort | None = None
    console: remote.ConsoleStream | None = None  # a remote guest's console, streamed
    volumes: list[str] = field(default_factory=list)


class Machine:
    """A guest of `spec`, booted on `session`'s libvirt connection for its run."""

    def __init__(self, name: str, spec: MachineSpec, session: Host):
        self.name, self.spec, self.distro = name, spec, spec.distro
        self.session, self.conn = session, session.conn
        self.dir = _unique_dir(session.run.dir, name)
        self.id = self.dir.name  # names its volumes: unique within the run
        # A restored machine keeps its template's; a cluster member's is in its spec.
        self.hostname = spec.member.hostname if spec.member else name
        self.template: Machine | None = None  # the machine it was restored from
        self.console_log = self.dir / "console.log"
        # Seconds from domain start to each readiness phase (harness.vm.readiness;
        # restore and command for a restored machine); rebootN: how long reboot N took.
        self.timings: dict[str, float] = {}
        self.res = Resources()
        self.started = 0.0
        self._console_mark = 0
        self._console_seen = (0, 0.0)  # console length, and when it last grew
        self._cycled_at = -1  # console length at the last power cycle: one per reset
        self.power_cycles = 0  # resets the firmware never answered (_power_cycle_if_stuck)
        self.restarts = 0  # guest resets, each answered by a new QEMU process
        self.restarted_at = 0.0  # time.monotonic() of the last new process
        self._process_mark = 0  # console length when the current QEMU process started
        self._live_xml = ""  # the running domain's XML, hot-plugged disks included
        self._ssh: ssh.Connection | None = None
        self.host_key: keys.KeyPair | None = None
        self.client_key: keys.KeyPair | None = None
        self.seed: seed.Media | None = None
        self.direct: domain.DirectBoot | None = None
        self.xml = ""
        # A cluster member's NIC on its private network: the domain's second NIC (set by
        # harness.vm.cluster before start: the switch is the run's), and what the seed
        # configures on it (from the spec).
        self.private_nic: domain.PrivateNic | None = None
        self.private: seed.PrivateInterface | None = spec.member.private if spec.member \
            else None
        self._powered_off = False  # by power_off(), for power_on()
        self.cancelled = ""  # why another thread gave up on this machine (cancel)

    @property
    def private_address(self) -> str | None:
        """This machine's address on its cluster's private network, or None."""
        return self.private.address.split("/")[0] if self.private else None

    # -- lifecycle -----------------------------------------------------------

    @property
    def accel(self) -> str:
        return self.session.accel

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
        run = self.session.run
        keydir = self.dir / "keys"
        self.client_key = keys.generate(keydir, "id_ed25519", f"harness-{run.id}")
        self.host_key = keys.generate(keydir, "ssh_host_ed25519_key", self.name)
        (keydir / "known_hosts").write_text("")  # written once the port is known
        intent = seed.Intent(hostname=self.hostname, user=self.distro.boot.ssh_user,
                             authorized_keys=(self.client_key.public,), host_key=self.host_key,
                             spare_host_keys=keys.spare_host_keys(keydir, self.name),
                             instance_id=f"{run.id}-{self.name}",
                             extra=self.spec.extra_config or {}, private=self.private)
        fmt = self.spec.seed
        options = self.distro.boot.seed_options if fmt == self.distro.boot.seed else {}
        self.seed = seed.build(fmt, intent, self.dir, options)
        if self.seed.fw_cfg and self.remote:
            raise MachineError(f"{self.name}: {fmt} passes its config as a fw_cfg file, which "
                               "QEMU opens on its own host: not supported on a remote "
                               f"hypervisor yet ({self.session.libvirt_uri})")
        pool = storage.pool(self.conn)
        image = self.spec.image
        base, vsize = storage.base_volume(self.conn, image.path, image.key)
        self.res.volumes.append(self.volume(""))
        if self.seed.disk:
            storage.upload(pool, self.volume("seed.iso"), self.seed.disk)
        storage.overlay(self.conn, self.volume("disk.qcow2"), base, vsize)
        if kb := self.spec.kernel_boot:
            kernel = storage.upload(pool, self.volume("kernel"), kb.kernel).path()
            initrd = storage.upload(pool, self.volume("initrd"), kb.initrd).path() \
                if kb.initrd else ""
            cmdline = " ".join(a for a in (kb.cmdline, self.seed.kernel_args) if a)
            self.direct = domain.DirectBoot(kernel, cmdline, initrd)

    def _domain_spec(self, port: int, seed_disk: bool | None = None) -> domain.DomainSpec:
        """This machine's domain; `seed_disk` says whether it has a seed volume (a
        restored machine's template says so, not its seed, which the cache keeps
        without the disk)."""
        cdrom = self.spec.image.media == "cdrom"
        # An ISO boots as a CD-ROM, on the IDE bus of QEMU's `pc` machine, which SeaBIOS
        # boots from. Unverified by a boot here: no ISO distro's image is cached.
        disks = [domain.Disk(storage.POOL, self.volume("disk.qcow2"), "hdc", device="cdrom",
                             readonly=True) if cdrom else
                 domain.Disk(storage.POOL, self.volume("disk.qcow2"), "vda")]
        if self.seed.disk if seed_disk is None else seed_disk:
            disks.append(domain.Disk(storage.POOL, self.volume("seed.iso"), "vdb", fmt="raw",
                                     readonly=True))
        run = self.session.run
        return domain.DomainSpec(
            name=run.domain_name(self.id), run_id=run.id,
            memory_mib=self.distro.boot.memory_mib, firmware=self.distro.boot.firmware,
            disks=tuple(disks), console_log=self.console_log, ssh_port=port,
            nvram=Path(storage.POOL_DIR) / self.volume("VARS.fd"), accel=self.accel,
            tb_cache_mib=tb_cache_mib(self.accel),
            fw_cfg=self.seed.fw_cfg, direct=self.direct, owner=run.owner.attrs(),
            console_stream=self.remote, open_network=self.session.open_network,
            private_nic=self.private_nic)

    @property
    def remote(self) -> bool:
        """Whether the guest runs on a remote hypervisor (harness.vm.remote)."""
        return self.session.jump is not None

    def save_path(self) -> Path:
        """Where libvirt writes this machine's memory image: a path on the host that
        runs it, so the pool's folder for a remote one (swept with its volumes)."""
        if self.remote:
            return Path(storage.POOL_DIR) / self.volume("memory.save")
        return self.dir / "memory.save"

    def _boot(self) -> None:
        def create(port: int) -> libvirt.virDomain:
            self.xml = domain.domain_xml(self._domain_spec(port))
            (self.dir / "domain.xml").write_text(self.xml)
            return self.conn.createXML(
                self.xml, libvirt.VIR_DOMAIN_START_PAUSED if self.remote else 0)

        self._start_on_a_free_port(create)
        self._follow_console()
        self._connect_ssh()

    def _follow_console(self) -> None:
        """A remote guest was started paused: stream its console from the first byte,
        then let it run (harness.vm.remote.ConsoleStream)."""
        if self.remote:
            self.res.console = remote.ConsoleStream(self.conn, self.res.domain,
                                                    self.console_log)
            self.res.domain.resume()

    def _start_on_a_free_port(self, start: Callable[[int], libvirt.virDomain]) -> None:
        """Take a free 127.0.0.1 port (locked here; probed on a remote hypervisor) and
        start the domain with its SSH forward there; try another port when someone
        outside the harness took it meanwhile (QEMU then fails to set up the forward)."""
        for attempt in range(3):
            self.res.port = self.session.forward_port()
            try:
                self.started = time.monotonic()
                self.res.domain = start(self.port)
                self._remember_domain()
                return
            except libvirt.libvirtError as e:
                self.res.port.release()
                self.res.port = None
                if "host forwarding" not in str(e) or attempt == 2:
                    raise
                log.info("%s: port taken by someone else, retrying on another", self.name)

    def _connect_ssh(self) -> None:
        trust = ssh.trust_for(self.seed, self.host_key, self.port,
                              self.dir / "keys" / "known_hosts", self.console_text)
        user, password = self.seed.password_login or (self.distro.boot.ssh_user, None)
        self._ssh = ssh.Connection(self.port, user, self.client_key, trust, password,
                                   jump=self.session.jump)

    def trusted_keys(self) -> list[tuple[str, str]]:
        """The guest host keys this machine's SSH trusts, as (type, base64)."""
        return list(self._ssh.trust.pinned) if self._ssh else []

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
                if saved.nvram_volume:  # at the path _domain_spec names
                    storage.clone(self.conn, saved.nvram_volume, self.volume("VARS.fd"))
                if saved.seed_volume:  # a copy of its own: the save's may outlive this run
                    storage.clone(self.conn, saved.seed_volume, self.volume("seed.iso"))

                def restore(port: int) -> libvirt.virDomain:
                    # The harness's own domain, never the XML the save file carries.
                    ours = dataclasses.replace(self._domain_spec(port, bool(saved.seed_volume)),
                                               name=saved.domain_name)
                    self.xml = snapshot.restore_xml(ours, saved.xml)
                    (self.dir / "domain.xml").write_text(self.xml)
                    self.conn.restoreFlags(str(saved.file), self.xml,
                                           libvirt.VIR_DOMAIN_SAVE_PAUSED if self.remote
                                           else libvirt.VIR_DOMAIN_SAVE_RUNNING)
                    return self.conn.lookupByName(saved.domain_name)

                self._start_on_a_free_port(restore)
                self._follow_console()
                self._mark("restore")
                self._connect_ssh()
                # The same guest: the host keys its template came to trust hold here too.
                for kind, blob in template.trusted_keys():
                    if (kind, blob) not in self._ssh.trust.pinned:
                        self._ssh.trust.record(ssh.host_name(self.port), kind, blob,
                                               f"trusted by {template.name}, saved")
                self._watch("first command", self.answers, self._timeout("boot"))
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
        return f"{self.session.run.volume_prefix()}{self.id}.{kind}"

    @property
    def port(self) -> int:
        return self.res.port.port

    def ssh_command(self) -> str:
        """What a person types to get into this guest."""
        return ssh.ssh_command(self.port, self.distro.boot.ssh_user,
                               self.client_key.private_path, self.dir / "keys" / "known_hosts",
                               self.session.jump.proxy_command() if self.remote else "")

    def ssh_banner(self) -> str | None:
        """The guest sshd's banner on its forwarded port (through a remote hypervisor);
        the connection that carried it is kept for the first login."""
        return self._ssh.probe(timeouts.get("banner"))

    def destroy(self) -> None:
        """Remove domain, volumes and port; safe to call twice and on a half-made machine."""
        if self._ssh:
            self._ssh.close()
        if self.res.console is not None:
            self.res.console.close()
            self.res.console = None
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
        """Hot-plug a local file as a read-only virtio disk; returns its guest path
        once the guest has it.

        Payloads too big for SSH under emulation (update images) reach the guest
        this way; the volume is removed with the machine. libvirt returns when QEMU
        has the device; the guest's kernel and udev make the by-id link later (under
        TCG, more than a second later), so the wait is part of attaching."""
        name = self.volume(serial)
        storage.upload(storage.pool(self.conn), name, source)
        taken = {t.get("dev") for t in ET.fromstring(self.res.domain.XMLDesc(0)).iter("target")}
        target = next(f"vd{c}" for c in "cdefghijklmnop" if f"vd{c}" not in taken)
        xml = domain.disk_xml(domain.Disk(storage.POOL, name, target, fmt="raw", readonly=True,
                                          serial=serial))
        self.res.domain.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self._remember_domain()  # a reboot keeps the disk, as it would in one process
        path = f"/dev/disk/by-id/virtio-{serial}"
        self.wait_until_succeeds(f"test -b {shlex.quote(path)}", timeouts.get("unit"))
        return path

    # -- evidence --------------------------------------------------------------

    def console_text(self) -> str:
        """Everything the serial console printed since the domain started."""
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 25) -> str:
        return console.tail(self.console_text(), lines)

    def running(self) -> bool:
        """Whether the domain runs; a transient domain that stopped no longer exists."""
        try:
            return self.res.domain is not None and bool(self.res.domain.isActive())
        except libvirt.libvirtError:
            return False

    def _error(self, cls: type[MachineError], what: str) -> MachineError:
        return cls(f"{self.name}: {what}\n  last console lines:\n{self.console_tail()}")

    def check_alive(self) -> None:
        """Raise BootFailure if waiting for this guest can no longer succeed: the
        domain is gone, or the console shows a fatal line since the last (re)boot.
        A check only: it changes nothing (the watchdog acts, `watchdog`)."""
        if self.cancelled:
            raise self._error(BootFailure, f"cancelled: {self.cancelled}")
        if not self.running():
            if lost := self._hypervisor_lost():
                raise self._error(MachineError, lost)
            if self._reset_pending():
                return  # the watchdog starts it again
            raise self._error(BootFailure, "the domain is no longer running")
        found = console.scan(self.console_text()[self._console_mark:], fatal_only=True)
        if found:
            raise self._error(BootFailure, f"{found[0].pattern.name} on the console: "
                                           f"{found[0].line}")

    def watchdog(self) -> None:
        """One turn of the watchdog, between the probes of every wait: a domain the
        guest's reset ended is started again, check_alive() reports a guest that
        cannot come back, then a reset the firmware never answers is power-cycled."""
        if self._reset_pending():
            self._start_again("the guest reset itself")
            self.restarts += 1
        self.check_alive()
        self._power_cycle_if_stuck(self.console_text())

    def _remember_domain(self) -> None:
        """Keep the running domain's XML: what `_start_again` starts."""
        self._live_xml = self.res.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)

    def _reset_pending(self) -> bool:
        """Whether the domain ended because the guest reset itself (on_reboot is
        destroy: QEMU exits at a reset): the kernel's reset line is the last thing
        this QEMU process printed."""
        if self.res.domain is None or self.running():
            return False
        printed = self.console_text()[self._process_mark:]
        return console.ends_with_reset(printed)

    def _start_again(self, why: str) -> None:
        """Start the domain as a new QEMU process with the same disks, NVRAM and
        hot-plugged devices, its console log appended to: to the guest, a reboot.
        A process of its own per boot keeps TCG from discarding the previous boot's
        translations while the firmware starts (docs/design.md, "Reboots")."""
        log.info("%s: %s; starting its domain again", self.name, why)
        if self.res.console is not None:
            self.res.console.close()
            self.res.console = None
        try:
            if self.running():
                self.res.domain.destroy()
            self._process_mark = len(self.console_text())
            self.restarted_at = time.monotonic()
            self.res.domain = self.conn.createXML(
                domain.appending_console(self._live_xml),
                libvirt.VIR_DOMAIN_START_PAUSED if self.remote else 0)
        except libvirt.libvirtError as e:
            raise self._error(MachineError, f"{why}, and starting its domain again "
                                            f"failed: {e}") from None
        self._follow_console()

    def _power_cycle_if_stuck(self, text: str) -> None:
        """Power the domain off and on when the guest reset itself and the firmware
        has printed nothing since, for longer than the `firmware` timeout.

        A guard expected never to fire, counted in `power_cycles` (boot.json): each
        reset already starts a new QEMU process (`watchdog`), whose firmware starts
        at full speed. It fired when a reset stayed in one process, where OVMF
        crawled under TCG (docs/design.md, "Reboots")."""
        now = time.monotonic()
        if len(text) != self._console_seen[0]:
            self._console_seen = (len(text), now)
            return
        silent = now - self._console_seen[1]
        # Only OVMF was seen crawling; it prints within seconds of a reset, where a
        # BIOS boot may stay silent on the serial port until its kernel.
        if (self.remote or self.distro.boot.firmware != "uefi" or self._cycled_at == len(text)
                or not console.ends_with_reset(text)
                or silent < timeouts.get("firmware")):
            return
        self._start_again(f"the firmware printed nothing for {silent:.0f}s after the "
                          "guest's reset; powering the domain off and on")
        self.power_cycles += 1
        self._cycled_at = len(text)
        self._console_seen = (len(text), time.monotonic())

    def power_off(self) -> None:
        """Pull the plug (virsh destroy): QEMU ends at once, the guest gets no say. Its
        disks, NVRAM, port and console log stay, for power_on()."""
        if self._ssh:
            self._ssh.close()
        self.res.domain.destroy()  # a transient domain: gone with its process
        self.res.domain = None
        self._powered_off = True

    def power_on(self) -> None:
        """Start a machine that power_off() stopped again, as a new QEMU process on the
        same disks and NVRAM (`_start_again`, as after a guest's reset; the guest boots
        again, as after a power failure), and wait until it is ready. Its timings get
        `power_onN`, the seconds until it was ready."""
        if not self._powered_off or self.res.domain is not None:
            raise MachineError(f"{self.name}: power_on() needs a machine power_off() stopped")
        self._console_mark = len(self.console_text())
        boot_timings, self.timings = self.timings, {}
        try:
            with step("power on", self.name):
                self.started = time.monotonic()
                self._start_again("powered on")  # from the XML it last ran with
                self._powered_off = False
                self.wait_ready()
        finally:
            ready = self.timings.get("ready")
            self.timings = boot_timings
            ons = [k for k in self.timings if k.startswith("power_on")]
            if ready is not None:
                self.timings[f"power_on{len(ons) + 1}"] = ready

    def cancel(self, why: str) -> None:
        """Make the waits of this machine, in whichever thread, end at their next turn
        with BootFailure(`why`): a cluster stopping its other members' boots."""
        self.cancelled = why

    def _hypervisor_lost(self) -> str:
        """Why libvirt no longer answers for a remote guest, or "" if it does."""
        if not self.remote:
            return ""
        try:
            self.conn.getLibVersion()
            return ""
        except libvirt.libvirtError as e:
            return (f"lost the hypervisor: libvirt at {self.session.libvirt_uri} no "
                    f"longer answers ({e}); the guest cannot be reached or watched")

    def console_match(self, pattern: str) -> str | None:
        """What the console printed since the last (re)boot that matches `pattern`."""
        m = re.search(pattern, self.console_text()[self._console_mark:])
        return m.group(0) if m else None

    # -- the watchdog ----------------------------------------------------------

    def _watch(self, what: str, probe: Callable[[], object], timeout: float,
               interval: float = 0.2, hint: str = "", stopping: bool = False):
        """Call `probe` until it returns something true, and return that.

        SSH errors count as "not yet". A dead domain or a fatal console line ends
        the wait at once (BootFailure), and so does a refused host key; running
        out of time is a MachineError with the last SSH error, the hint and the
        console's last lines. Every wait of this class goes through here; one for
        the domain to stop (`stopping`) does not take a stopped domain for a death."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        with step(what, self.name):
            while True:
                if not stopping:
                    self.watchdog()
                try:
                    if result := probe():
                        return result
                except ssh.HostKeyMismatch as e:
                    raise self._error(MachineError, f"{what}: {e}") from None
                except SSH_ERRORS as e:
                    last = e
                if time.monotonic() >= deadline:
                    why = f" (last error: {type(last).__name__}: {last})" if last else ""
                    hint = f"\n  hint: {hint}" if hint else ""
                    raise self._error(MachineError,
                                      f"{what}: not within {timeout:.0f}s{why}{hint}")
                time.sleep(interval)

    def _ssh_run(self, cmd: str, timeout: float, stdin: bytes | None = None,
                 sudo: bool = True) -> ssh.Result:
        """One command over SSH; a lost connection or guest is a MachineError with
        the console's last lines, never a raw paramiko exception."""
        try:
            result = self._ssh.run(cmd, timeout, sudo=sudo, stdin=stdin)
        except ssh.HostKeyMismatch as e:
            raise self._error(MachineError, f"`{_short(cmd)}`: {e}") from None
        except SSH_ERRORS as e:
            self._check_alive_a_while()
            raise self._error(MachineError, f"`{_short(cmd)}`: {type(e).__name__}: "
                                            f"{e or 'connection lost'}") from e
        if result.status == -1:  # the channel closed without an exit status
            self._check_alive_a_while()
            raise self._error(MachineError, f"`{_short(cmd)}`: the SSH connection closed "
                                            "before the command finished")
        return result

    def _check_alive_a_while(self, seconds: float = 3.0) -> None:
        """check_alive() for a few seconds: a connection that drops because QEMU died
        drops before libvirt has noticed the domain is gone."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            time.sleep(0.3)

    def answers(self) -> bool:
        """Whether a command runs (probe: the raw connection, so errors mean "not yet")."""
        return self._ssh.run("true", timeouts.get("ssh_command"), sudo=False).status == 0

    def _timeout(self, name: str) -> float:
        """A boot's wait, with the distro's own budget where the catalog gives one."""
        return timeouts.get(name, self.distro.boot.timeouts)

    def _mark(self, phase: str) -> None:
        self.timings[phase] = round(time.monotonic() - self.started, 2)

    def wait_ready(self) -> None:
        """Readiness, phase by phase (harness.vm.readiness), each logged with its time."""
        for phase in readiness.PHASES:
            self._watch(phase.description, lambda p=phase: p.probe(self),
                        self._timeout(phase.timeout), hint=phase.hint)
            self._mark(phase.name)
        log.info("%s: ready: %s", self.name,
                 ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))

    def boot_finished(self) -> bool:
        """The catalog's "boot finished" commands; a failure names the failed units."""
        for cmd in self.distro.boot.ready:
            with step(f"boot finished: {_short(cmd)}", self.name):
                result = self.run(cmd, timeout=self._timeout("ready"))
            if result.status != 0:
                failed = self.run("systemctl --failed --no-legend --plain; "
                                  "journalctl -b -p warning --no-pager -n 30").stdout
                raise BootFailure(f"{self.name}: boot did not finish cleanly: "
                                  f"{result.describe(cmd)}\n"
                                  f"--- failed units, warnings ---\n{failed}")
        return True

    # -- commands --------------------------------------------------------------

    def run(self, cmd: str, timeout: float | None = None, stdin: bytes | None = None
            ) -> ssh.Result:
        """Run `cmd` as root in the guest; its exit status, stdout and stderr."""
        started = time.monotonic()
        result = self._ssh_run(cmd, timeout or timeouts.get("ssh_command"), stdin=stdin)
        log.info("%s: $ %s -> %d (%.1fs)", self.name, _short(cmd), result.status,
                 time.monotonic() - started)
        return result

    def succeed(self, cmd: str, timeout: float | None = None, stdin: bytes | None = None) -> str:
        """Run `cmd`; its stdout, or CommandFailed with its output if it exits non-zero."""
        result = self.run(cmd, timeout, stdin)
        if result.status != 0:
            raise CommandFailed(f"{self.name}: {result.describe(cmd)}")
        return result.stdout

    def fail(self, cmd: str, timeout: float | None = None) -> ssh.Result:
        """Run `cmd` and require a non-zero exit; its result, for the test to inspect."""
        result = self.run(cmd, timeout)
        if result.status == 0:
            raise CommandFailed(f"{self.name}: expected failure, but {result.describe(cmd)}")
        return result

    def wait_until_succeeds(self, cmd: str, timeout: float | None = None) -> str:
        """Run `cmd` until it exits 0; its stdout. Make `cmd` fail until the condition
        holds (`test`, `grep -q`): output alone is never checked."""
        def ok():
            r = self._ssh.run(cmd, timeouts.get("ssh_command"))
            return r.stdout or "\n" if r.status == 0 else None

        return self._watch(f"until `{_short(cmd)}` succeeds", ok,
                           timeout or timeouts.get("ready"))

    def wait_for_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait for a unit to be active. A failed unit, or an inactive one with no job
        queued to start it, ends the wait at once with the unit's status."""
        q = shlex.quote(unit)

        def active() -> bool:
            state = self._ssh.run(f"systemctl is-active {q}",
                                  timeouts.get("ssh_command")).stdout.strip()
            if state == "active":
                return True
            queued = self._ssh.run(f"systemctl list-jobs --no-legend --plain {q}",
                                   timeouts.get("ssh_command")).stdout.strip()
            if state == "inactive" and not queued:  # its job may have just finished
                state = self._ssh.run(f"systemctl is-active {q}",
                                      timeouts.get("ssh_command")).stdout.strip()
                if state == "active":
                    return True
            if state == "failed" or (state == "inactive" and not queued):
                status = self._ssh.run(f"systemctl status --no-pager -n 20 {q}",
                                       timeouts.get("ssh_command")).stdout
                why = "failed" if state == "failed" else "is inactive and no job will start it"
                raise CommandFailed(f"{self.name}: unit {unit} {why}:\n{status}")
            return False

        self._watch(f"unit {unit} active", active, timeout or timeouts.get("unit"))

    def boot_id(self) -> str:
        """This boot's id; a new one after every real boot."""
        return self.succeed(f"cat {_BOOT_ID}").strip()

    def reboot(self, settle: Callable[[], bool] | None = None, boots: int = 1) -> None:
        """Reboot and wait for a new boot id; the dropped connection is expected.

        `settle`, when given, must also hold before the wait ends: for boots that
        reboot again by themselves (a trial boot that fails its health check),
        with a budget of `boots` boots."""
        self._console_mark = len(self.console_text())
        restarts = self.restarts
        # One command: the boot id to leave behind, and the reboot.
        old = self.succeed(f"cat {_BOOT_ID} && {_LATER.format('reboot')}").split()[0]
        self._ssh.close()

        settled_at = [0.0]

        def new_boot() -> bool:
            # Nothing is asked of the guest until its reset has started a new QEMU
            # process (watchdog): a probe costs a shutting-down guest a login.
            if self.restarts == restarts:
                return False
            r = self._ssh.run(f"cat {_BOOT_ID}", timeouts.get("ssh_command"), sudo=False)
            if r.status != 0 or r.stdout.strip() in ("", old):
                return False
            if settle is None:
                return True
            # A boot that may reboot again is asked at most every few seconds: each
            # `settle` costs it a command as root while it decides.
            if time.monotonic() - settled_at[0] < _SETTLE_EVERY:
                return False
            settled_at[0] = time.monotonic()
            try:
                return settle()
            except BootFailure:
                raise
            except MachineError:  # the guest rebooted again under `settle`: not yet
                return False

        budget = (self._timeout("reboot") + self._timeout("boot")) * boots
        started = time.monotonic()
        self._watch("reboot (new boot id)" if settle is None else "reboot until settled",
                    new_boot, budget)
        self.boot_finished()
        reboots = [k for k in self.timings if k.startswith("reboot")]
        self.timings[f"reboot{len(reboots) + 1}"] = round(time.monotonic() - started, 2)

    def shutdown(self) -> None:
        """Power the guest off from inside and wait until the domain has stopped."""
        self.run(_LATER.format("poweroff"))
        self._ssh.close()
        self._watch("shutdown", lambda: not self.running(), timeouts.get("shutdown"),
                    interval=0.5, stopping=True)
        self.res.domain = None  # a transient domain is gone once it stopped


# A reboot or power-off a moment after the command that asks for it has returned its
# exit status over SSH. A transient timer's default accuracy is a minute, which
# systemd spends as it likes (systemd.timer(5), AccuracySec=): under TCG the
# one-second timer fired two seconds after it was set.
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_SETTLE_EVERY = 5.0  # seconds between a reboot's `settle` probes
_LATER = ("systemd-run --no-block --on-active=300ms --timer-property=AccuracySec=10ms "
          "systemctl {}")


def _unique_dir(parent: Path, name: str) -> Path:
    """A new directory for machine `name` in `parent`: `name`, or `name_2`,
    `name_3`, ... when a machine of that name existed before in this run. The name
    is checked before anything is created."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise MachineError(f"machine name {name!r}: use letters, digits, '-' or '_'")
    for n in range(1, 1000):
        candidate = parent / (name if n == 1 else f"{name}_{n}")
        try:
            candidate.mkdir(mode=0o711)
            return candidate
        except FileExistsError:
            continue
    raise MachineError(f"too many machines named {name}")


def _short(cmd: str, width: int = 80) -> str:
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."
