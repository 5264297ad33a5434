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

Members boot cold (a save restores as one running domain under the save's
name, so a cluster's saves would have to be a group; not built yet).

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
from harness.vm.machine import Machine, MachineError, MachineSpec


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
                 config: ConfigFn | None = None, name: str = "c"):
        self.session, self.spec, self.size, self.config = session, spec, size, config
        self.name = name
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
                self.members = [self._member(p) for p in self.plans]
                self._boot_all()
        except BaseException:
            self.close()
            raise
        return self

    def _network_name(self) -> str:
        """Unique within the run: a second cluster of the run gets its own switch."""
        taken = {r.name for r in network.read_records(self.session.run.dir)}
        return next(n for n in (f"{self.name}{i}" for i in range(1000)) if n not in taken)

    def _member(self, plan: MemberPlan) -> Machine:
        extra = self.spec.extra_config
        own = self.config(plan) if self.config else None
        if own:
            extra = seed.merge(parse_extra(extra), parse_extra(own))
        spec = MachineSpec(self.spec.distro, self.spec.image, self.spec.seed_format,
                           extra or None)
        m = self.session.new_machine(plan.name, spec)
        m.hostname = plan.hostname
        m.private = seed.PrivateInterface(network.member_mac(plan.index),
                                          network.member_interface(plan.index))
        m.private_nic = domain.PrivateNic(str(self.switch.dir), network.member_mac(plan.index))
        return m

    def _boot_all(self) -> None:
        """Every member's start() in a thread of its own; the first error is raised
        once all have ended (Machine.start removes a member that failed)."""
        errors: list[BaseException] = []

        def boot(m: Machine) -> None:
            try:
                m.start()
            except BaseException as e:  # handed to the caller below
                errors.append(e)
                for other in self.members:  # no use waiting for the others
                    other.cancel(f"{m.name}, a member of the same cluster, failed")

        self._threads = [threading.Thread(target=boot, args=(m,), name=f"boot {m.name}",
                                          daemon=True) for m in self.members]
        for t in self._threads:
            t.start()
        for t in self._threads:
            t.join()
        if errors:
            raise ClusterError(f"cluster {self.name}: {len(errors)} of {self.size} members "
                               f"failed to boot; the first: {errors[0]}") from errors[0]
        log.info("%s: %d members ready: %s", self.name, self.size,
                 ", ".join(f"{m.name} {m.private_address}" for m in self.members))

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
        for m in self.members:
            m.cancel("the cluster is closing")
        for t in self._threads:
            t.join(CANCEL_PATIENCE)
        for m in self.members:
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
