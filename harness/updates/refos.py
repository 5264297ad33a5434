"""refos: A/B slots with systemd-boot boot counting (see images/refos)."""

from harness.images import build
from harness.updates import SlotStatus
from harness.vm import timeouts


def parse_status(text: str) -> SlotStatus:
    """Read `refos-status` output (KEY=VALUE lines)."""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return SlotStatus(fields["SLOT"], fields["VERSION"])
    except KeyError as e:
        raise ValueError(f"refos-status output lacks {e}: {text!r}") from None


class Refos:
    def status(self, machine) -> SlotStatus:
        return parse_status(machine.succeed("refos-status"))

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """Hand the recipe's payload to refos-update through a hot-plugged disk;
        returns what should boot next."""
        before = self.status(machine)
        built = build.artifacts()
        payload = built.payload(kind, machine.distro.image.build)
        device = machine.attach_disk(payload, f"payload-{kind}")
        machine.succeed(f"refos-update {device}", timeout=timeouts.get("ready"))
        other = {"a": "b", "b": "a"}[before.slot]
        return SlotStatus(other, built.manifest()["versions"][kind])

    def rollback(self, machine) -> None:
        machine.succeed("refos-rollback")
