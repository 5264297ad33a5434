"""RancherOS and BurmillaOS: the OS is a container image; `ros os upgrade -i IMAGE`
switches to another image, and nothing reverts a bad one by itself (going back is
an upgrade to the older image)."""

from dataclasses import dataclass

from harness.updates import NetworkUpdater, SlotStatus, adapter
from harness.vm import timeouts


@dataclass(frozen=True)
class OsImage:
    image: str
    tags: tuple[str, ...]  # local or remote, latest, running

    @property
    def version(self) -> str:
        return self.image.rsplit(":", 1)[-1]


def parse_version(text: str) -> str:
    """`ros os version` prints the version alone (v1.5.8); `ros -v` says
    "version v1.4.0 from os image rancher/os:v1.4.0". Either is accepted."""
    words = text.split()
    if not words:
        raise ValueError("ros printed no version")
    return words[1] if words[0] == "version" and len(words) > 1 else words[0]


def parse_list(text: str) -> list[OsImage]:
    """`ros os list`: one image a line, followed by its tags."""
    return [OsImage(cols[0], tuple(cols[1:])) for cols in map(str.split, text.splitlines())
            if cols and ":" in cols[0]]


def running(images: list[OsImage]) -> OsImage:
    for image in images:
        if "running" in image.tags:
            return image
    raise ValueError("ros os list marks no image running")


def upgrade_command(image: str) -> str:
    return f"ros os upgrade -f --no-reboot -i {image}"


@adapter("ros")
class Ros(NetworkUpdater):
    mechanism = "ros os upgrade"
    server = "Docker Hub (the OS images)"

    def __init__(self, distro):
        super().__init__(distro)
        self.previous = ""

    def status(self, machine) -> SlotStatus:
        version = parse_version(machine.succeed("ros os version"))
        return SlotStatus(version, version)

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"ros cannot stage a {kind!r} image")
        listed = machine.run("ros os list")
        if listed.status != 0:
            self._staged(machine, "ros os list")  # raises NeedsNetwork with the output
        images = parse_list(listed.stdout)
        current, newest = running(images), images[-1]
        if newest == current:
            raise ValueError(f"no image newer than {current.image} to upgrade to")
        self.previous = current.image
        self._staged(machine, upgrade_command(newest.image), timeouts.get("ready"))
        return SlotStatus(newest.version, newest.version)

    def rollback(self, machine) -> None:
        """No rollback command: upgrade back to the image that ran before `stage`."""
        if not self.previous:
            raise ValueError("nothing staged, so no earlier image to go back to")
        machine.succeed(upgrade_command(self.previous), timeout=timeouts.get("ready"))
