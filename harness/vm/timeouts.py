"""Every timeout in one place. Values are for a KVM guest; without KVM (TCG,
software emulation) they are multiplied, since everything runs 5 to 20 times
slower. The HARNESS_TIMEOUT_SCALE setting multiplies them again (a slow CI host).
A catalog entry may raise a boot-related one for its distro (`boot.timeouts`, in
the same KVM seconds, scaled the same way): a first boot that seeds snaps is slow
by design, not broken."""

from collections.abc import Mapping

from harness import settings

BASE = {
    "boot": 60,  # domain start to the first SSH banner
    "ssh_command": 15,  # one command, once connected
    "banner": 1,  # a connection to the guest's sshd until its banner (a new sshd process)
    "ready": 60,  # SSH to "boot finished" (systemd, cloud-init)
    "reboot": 60,  # reboot request to the new boot answering
    "shutdown": 30,
    "firmware": 20,  # a guest's reset until the firmware prints anything
    "unit": 30,  # wait_for_unit
    "probe": 4,  # the KVM probe's deadline
}
# The ones a catalog entry may set (boot.timeouts): the waits of a boot and a reboot.
PER_DISTRO = ("boot", "ready", "reboot")
TCG_FACTOR = 5
_accel = "tcg"


def set_accel(accel: str) -> None:
    global _accel
    _accel = accel


def scale() -> float:
    factor = 1.0 if _accel == "kvm" else TCG_FACTOR
    return factor * settings.get("HARNESS_TIMEOUT_SCALE")


def get(name: str, distro: Mapping[str, int] | None = None) -> float:
    """Seconds for `name`; `distro` is the catalog entry's boot.timeouts, whose value
    (KVM seconds) replaces the harness's own before the scaling."""
    if name == "probe":  # the probe decides the accelerator, so it cannot depend on it
        return BASE[name] * settings.get("HARNESS_TIMEOUT_SCALE")
    return (distro or {}).get(name, BASE[name]) * scale()
