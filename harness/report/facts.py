"""The comparison's facts, measured inside a running guest.

The 2015 comparison table listed, per distro, kernel, Docker version, init
system, package manager, root filesystem and bundled tools. Each value here is
read from the guest by a command during the run; when a command cannot give
it, the value is None and `why` says what happened, so a report never shows a
typed-in or guessed value.
"""

import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE_MANAGERS = ("rpm-ostree", "tdnf", "snap", "snappy", "ros", "apt-get", "rpm")
BUNDLED_TOOLS = ("etcdctl", "fleetctl", "atomic")
MOUNTS = ("/", "/usr")
# The flag OSTree's initramfs leaves when it booted a deployment (ostreedev/ostree
# src/switchroot/ostree-mount-util.h @ v2022.7, touch_run_ostree): the root filesystem
# is then reported as "ostree: " and the mount under the deployment.
OSTREE_BOOTED = "/run/ostree-booted"
# What configured the first boot, by the marks each agent leaves: Ignition its result
# file (coreos/ignition v2.14.0 internal/distro/distro.go, resultFilePath), cloud-init
# the datasource it used.
FIRST_BOOT = ("if [ -e /etc/.ignition-result.json ]; then echo Ignition; "
              "elif [ -r /var/lib/cloud/instance/datasource ]; then "
              "echo \"cloud-init ($(cut -d: -f1 /var/lib/cloud/instance/datasource))\"; fi")


@dataclass(frozen=True)
class Value:
    """A measured value, or None with the reason it could not be measured."""

    value: str | None
    why: str = ""
    command: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "Value":
        return cls(data.get("value"), data.get("why", ""), data.get("command", ""))


class _Runner:
    """Runs one command per fact and turns its outcome into a Value."""

    def __init__(self, machine):
        self.machine = machine

    def read(self, cmd: str, parse: Callable[[str], str | None] = str.strip) -> Value:
        try:
            result = self.machine.run(cmd)
        except Exception as e:  # an SSH or guest error is a reason, not a crash
            return Value(None, f"not measured: `{cmd}` could not run: {e}", cmd)
        if result.status != 0:
            err = (result.stderr.strip() or result.stdout.strip()).splitlines()
            tail = err[-1] if err else "no output"
            return Value(None, f"not measured: `{cmd}` exited {result.status}: {tail}", cmd)
        value = parse(result.stdout)
        if value is None or value == "":
            return Value(None, f"not measured: `{cmd}` printed nothing", cmd)
        return Value(value, "", cmd)

    def found(self, names: tuple[str, ...]) -> Value:
        """Which of `names` are on the PATH; finding none is itself a measurement."""
        cmd = "for c in " + " ".join(names) + "; do command -v $c; done; true"
        return self.read(cmd, lambda out: ", ".join(Path(p).name for p in out.split())
                         or "none of " + ", ".join(names))


def gather(machine) -> dict[str, Value]:
    """Every comparison value for the guest behind `machine` (a harness Machine)."""
    r = _Runner(machine)
    facts = {
        "kernel": r.read("uname -r"),
        "docker": r.read("docker version --format '{{.Server.Version}}'"),
        "init": r.read("ps -p 1 -o comm="),
        "package_manager": r.found(PACKAGE_MANAGERS),
        "bundled_tools": r.found(BUNDLED_TOOLS),
        "first_boot": r.read(FIRST_BOOT),
    }
    for path in MOUNTS:
        # --target finds the filesystem holding the path even when it is not a mount point.
        facts[f"mount {path}"] = r.read(
            f"if [ -e {OSTREE_BOOTED} ]; then printf 'ostree '; fi; "
            f"findmnt -no TARGET,FSTYPE,OPTIONS --target {shlex.quote(path)}", _mount)
    return facts


def _mount(out: str) -> str | None:
    """`[ostree] TARGET FSTYPE OPTIONS` as `[ostree: ]FSTYPE (OPTIONS) on TARGET`."""
    parts = out.split()
    kind = ""
    if len(parts) == 4 and parts[0] == "ostree":
        kind = "ostree: "
        parts = parts[1:]
    if len(parts) != 3:
        return None
    target, fstype, options = parts
    return f"{kind}{fstype} ({options}) on {target}"


def image_size(path: Path | None) -> Value:
    """Size of the image file the run booted."""
    if path is None:
        return Value(None, "not measured: no image was resolved")
    try:
        size = path.stat().st_size
    except OSError as e:
        return Value(None, f"not measured: {path}: {e.strerror}")
    return Value(f"{size / 2**20:.0f} MiB", "", f"stat {path.name}")


def to_json(facts: dict[str, Value]) -> dict[str, dict]:
    return {name: asdict(v) for name, v in facts.items()}


def from_json(data: dict[str, dict]) -> dict[str, Value]:
    return {name: Value.from_dict(v) for name, v in data.items()}
