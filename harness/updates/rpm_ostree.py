"""Fedora CoreOS and Fedora Atomic: rpm-ostree deploys a new ostree commit beside the
booted one; `rollback` makes the other deployment the default for the next boot."""

import json

from harness.updates import NetworkUpdater, SlotStatus, adapter
from harness.vm import timeouts


def parse_status_json(text: str) -> SlotStatus:
    """The booted deployment of `rpm-ostree status --json` ("deployments": a list of
    objects with "booted", "checksum", "version")."""
    for deployment in json.loads(text).get("deployments", []):
        if deployment.get("booted"):
            return SlotStatus(deployment["checksum"], deployment.get("version", ""))
    raise ValueError("rpm-ostree status lists no booted deployment")


def parse_admin_status(text: str) -> SlotStatus:
    """The booted deployment of `ostree admin status`, for rpm-ostree too old for
    --json: it is the line marked `*` ("* OSNAME CHECKSUM.SERIAL"), with its
    indented "Version:" line when the commit carries one."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("* "):
            checksum = line.split()[2].rsplit(".", 1)[0]
            return SlotStatus(checksum, _version_below(lines[i + 1:]))
    raise ValueError(f"ostree admin status marks no booted deployment: {text!r}")


def _version_below(lines: list[str]) -> str:
    for line in lines:
        if not line.startswith(" "):
            break
        key, _, value = line.strip().partition(":")
        if key == "Version":
            return value.split()[0] if value.split() else ""
    return ""


@adapter("rpm-ostree")
class RpmOstree(NetworkUpdater):
    mechanism = "rpm-ostree"
    server = "the distro's ostree remote"

    @property
    def cli(self) -> str:
        # Fedora 22 Atomic Host's documented commands were `atomic host upgrade|rollback`.
        return "atomic host" if self.distro.family == "fedora-atomic" else "rpm-ostree"

    def status(self, machine) -> SlotStatus:
        result = machine.run("rpm-ostree status --json")
        if result.status == 0:
            return parse_status_json(result.stdout)
        return parse_admin_status(machine.succeed("ostree admin status"))

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"rpm-ostree cannot stage a {kind!r} payload")
        self._staged(machine, f"{self.cli} upgrade", timeouts.get("ready"))
        return parse_pending_json(machine.succeed("rpm-ostree status --json"))

    def rollback(self, machine) -> None:
        machine.succeed(f"{self.cli} rollback")


def parse_pending_json(text: str) -> SlotStatus:
    """What boots next after an upgrade: the first deployment, when it is not booted."""
    deployments = json.loads(text).get("deployments", [])
    if not deployments or deployments[0].get("booted"):
        raise ValueError("the upgrade left no new deployment")
    return SlotStatus(deployments[0]["checksum"], deployments[0].get("version", ""))
