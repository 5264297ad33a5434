"""Clusters: several machines of one distro on a private network of their own.

A `Cluster` starts a VDE switch (harness.vm.network), then boots its members
concurrently, one thread each: member i is a Machine named `m<i>` (its host
name too), with its own seed (its own SSH host key, instance id and extra
configuration) and a second NIC on the switch at 10.87.0.(11+i)/24. It waits
until every member is ready; if one fails, all are removed and the switch
stopped before the error is raised. Leaving the `with` block (or `close()`)
removes them all the same way.

Each member's extra configuration comes from the caller's `config(plan)`, in the
distro's own seed format (a dict of harness.seed's vocabulary, whose
`cloud_config` or `ignition` table carries native keys); `plan` is the member's
`MemberPlan`: its index, name, host name, private address and its peers.

Members come from saves like single machines (harness.vm.snapshot): each member
is a spec of its own (harness.vm.machine.Member: its host name and private
interface are in its seed), so each has its own save and its own identity. The
first time, each member's template boots cold on the cluster's switch, is saved
and restored; later sessions restore all members from the warm cache. A save
holds the private NIC in its domain: a restore changes only the switch's socket
path (a QEMU argument, outside libvirt's ABI check). `cold=True`, the
`cold_boot` marker or --cold-boots boot every member from scratch.

What a suite uses:
    cluster.members                 the Machines, in index order
    cluster.address(m)              m's private address (also m.private_address)
    cluster.destroy_member(m)       power m off at once (virsh destroy); its disks stay
    cluster.start_member(m)         power m on again, same disks and NVRAM, and wait
                                    until it is ready (console log appended)
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass

from harness import seed
from harness.log import log, step
from harness.seed.base import parse_extra
from harness.vm import accel, domain, network
from harness.vm.machine import Machine, MachineError, MachineSpec, Member


class ClusterError(MachineError):
    """A cluster that cannot be made here: too big for memory, a remote hypervisor, a
    seed format that cannot carry per-member configuration, or a member that failed."""


CANCEL_PATIENCE = 120.0  # seconds a member's boot thread has to notice a cancel
# Seed formats whose media carry files, so a private interface and per-member config.
PER_MEMBER_FORMATS = ("nocloud", "config-2", "ignition", "ubuntu-core")


@dataclass(frozen=True)
class MemberPlan:
    """What a member's configuration is made from, before anything boots."""

    index: int
    name: str
    hostname: str
    private_address: str
    peers: tuple[tuple[str, str], ...]  # every other member as (name, private address)

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """Every member, this one included, as (name, private address), by index."""
        return tuple(sorted((*self.peers, (self.name, self.private_address)),
                            key=lambda p: int(p[1].rsplit(".", 1)[1])))


ConfigFn = Callable[[MemberPlan], dict | str | None]


def plans(size: int, prefix: str = "m") -> list[MemberPlan]:
    """The plans of a cluster of `size`: names `<prefix><i>`, addresses by index."""
    names = [f"{prefix}{i}" for i in range(size)]
    addrs = [network.member_address(i) for i in range(size)]
    return [MemberPlan(i, names[i], names[i], addrs[i],
                       tuple((n, a) for j, (n, a) in enumerate(zip(names, addrs, strict=True))
                             if j != i))
            for i in range(size)]


def refusal(spec: MachineSpec, size: int, remote: bool, budget_mib: int | None,
            accel_mode: str) -> str | None:
    """Why a cluster of `size` members of `spec` cannot run here, or None; decided
    before any boot (the pytest plugin skips or fails with it)."""
    if size < 1 or size > network.MAX_MEMBERS:
        return f"cluster size {size}: give 1 to {network.MAX_MEMBERS}"
    if remote:
        return ("clusters run on a local hypervisor only: the private network's switch "
                "is a local process the remote host would need to run (not built)")
    if spec.seed not in PER_MEMBER_FORMATS:
        return (f"{spec.distro.name}'s seed format {spec.seed!r} cannot carry a member's "
                "private interface and configuration")
    if spec.kernel_boot is not None:
        return "cluster members boot their image, not a kernel given directly"
    need = accel.guest_cost_mib(spec.distro.boot.memory_mib, accel_mode) * size
    if budget_mib is not None and need > budget_mib:
        return (f"a cluster of {size} {spec.distro.name} members needs {need} MiB "
                f"({size} x {accel.guest_cost_mib(spec.distro.boot.memory_mib, accel_mode)}"
                f" MiB: RAM, TCG cache, QEMU), more than the {budget_mib} MiB available")
    return None


class Cluster:
    """`size` members of `spec` on one private network, on `session` (a
    harness.vm.session.Session). `config(plan)` gives each member's extra
    configuration (merged over the spec's own). Use as a context manager, or call
    start() and close()."""

    def __init__(self, session, spec: MachineSpec, size: int,
                 config: ConfigFn | None = None, name: str = "c", cold: bool = False):
        self.session, self.spec, self.size, self.config = session, spec, size, config
        self.name, self.cold = name, cold
        self._lock = threading.Lock()
        self._wired: list[Machine] = []  # members and templates plugged into the switch
        self.plans = plans(size)
        self.members: list[Machine] = []
        self.switch: network.Switch | None = None
        self._threads: list[threading.Thread] = []

    def address(self, m: Machine) -> str:
        """`m`'s address on the private network."""
        return m.private_address

    def start(self) -> "Cluster":
        """Start the switch and boot every member at once; on any failure remove all."""
        if why := refusal(self.spec, self.size, self.session.jump is not None, None,
                          self.session.accel):
            raise ClusterError(why)
        try:
            with step(f"cluster of {self.size} {self.spec.distro.name}", self.name):
                self.switch = network.Switch.start(
                    self.session.run.dir, self._network_name(),
                    network.qemu_group(self.session.conn))
                self._boot_all()
        except BaseException:
            self.close()
            raise
        return self

    def _network_name(self) -> str:
        """Unique within the run: a second cluster of the run gets its own switch."""
        taken = {r.name for r in network.read_records(self.session.run.dir)}
        return next(n for n in (f"{self.name}{i}" for i in range(1000)) if n not in taken)

    def _spec(self, plan: MemberPlan) -> MachineSpec:
        """Member `plan`'s spec: the cluster's, with the member's own extra configuration
        merged over it, and its host name and private interface (harness.vm.machine.Member):
        a spec, and so a save, of its own."""
        extra = self.spec.extra_config
        own = self.config(plan) if self.config else None
        if own:
            extra = seed.merge(parse_extra(extra), parse_extra(own))
        private = seed.PrivateInterface(network.member_mac(plan.index),
                                        network.member_interface(plan.index))
        return MachineSpec(self.spec.distro, self.spec.image, self.spec.seed_format,
                           extra or None, member=Member(plan.hostname, private))

    def _wire(self, m: Machine) -> None:
        """Plug a member, or the template it is restored from, into this switch."""
        m.private_nic = domain.PrivateNic(str(self.switch.dir), m.private.mac)
        with self._lock:
            self._wired.append(m)

    def _boot_all(self) -> None:
        """Every member in a thread of its own, restored from its save (the first time
        its template boots cold and is saved) or booted cold; the first error is
        raised once all have ended, the other boots cancelled."""
        specs = [self._spec(p) for p in self.plans]  # a bad configuration: before any boot
        results: list[Machine | None] = [None] * self.size
        errors: list[BaseException] = []

        def boot(i: int) -> None:
            try:
                results[i] = self.session.machine(self.plans[i].name, specs[i],
                                                  cold=self.cold, wire=self._wire)
            except BaseException as e:  # handed to the caller below
                errors.append(e)
                self._cancel(f"{self.plans[i].name}, a member of the same cluster, failed")

        self._threads = [threading.Thread(target=boot, args=(i,), daemon=True,
                                          name=f"boot {self.plans[i].name}")
                         for i in range(self.size)]
        for t in self._threads:
            t.start()
        for t in self._threads:
            t.join()
        self.members = [m for m in results if m is not None]
        if errors:
            raise ClusterError(f"cluster {self.name}: {len(errors)} of {self.size} members "
                               f"failed to boot; the first: {errors[0]}") from errors[0]
        log.info("%s: %d members ready: %s", self.name, self.size,
                 ", ".join(f"{m.name} {m.private_address}" for m in self.members))

    def _cancel(self, why: str) -> None:
        with self._lock:
            wired = list(self._wired)
        for m in wired:
            m.cancel(why)

    def destroy_member(self, m: Machine) -> None:
        """Power `m` off at once (virsh destroy); disks and NVRAM stay for start_member."""
        with step("destroy (power off)", m.name):
            m.power_off()

    def start_member(self, m: Machine) -> None:
        """Power `m` on again, on the same disks and NVRAM, and wait until it is ready."""
        m.power_on()

    def close(self) -> None:
        """Remove every member and the switch; safe to call twice. Boots still running
        (close() on Ctrl-C) are cancelled and waited for first: a member's thread
        removes what it made, and nothing is made after close()."""
        self._cancel("the cluster is closing")
        for t in self._threads:
            t.join(CANCEL_PATIENCE)
        with self._lock:
            made = list(dict.fromkeys([*self.members, *self._wired]))
        for m in made:
            try:
                m.destroy()
            except Exception as e:  # the session's final sweep takes what is left
                log.warning("%s: removing %s failed, going on: %s", self.name, m.name, e)
        if self.switch is not None:
            self.switch.stop()
            self.switch = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
