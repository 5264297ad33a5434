"""The OSTree family: refos-ostree (Debian's ostree 2022.7), Fedora CoreOS (rpm-ostree)
and Fedora 22 Atomic Host (rpm-ostree and ostree of 2015, `atomic host`). One adapter:
it asks the guest which tools it has and which rpm-ostree release, and only what the
tools themselves differ in is a branch, each naming its source.

An update is staged offline, the way kola tests upgrade and rollback
(coreos/coreos-assembler mantle/kola/tests/rpmostree/deployments.go @ 9f53ced5,
rpmOstreeUpgradeRollback): a new commit is made in the guest's own repo from the
booted one, with a new `version` and a marker file, on a local branch, and deployed.

    ostree commit --branch=REF --tree=ref=BOOTED --tree=dir=DIR --add-metadata-string=version=V
        kola's command, plus `--tree=dir=` (the marker file under DIR/usr); both forms
        of --tree exist since 2015 (ostreedev/ostree src/ostree/ot-builtin-commit.c
        @ v2015.6). As root on a read-only /sysroot, ostree remounts it writable in a
        mount namespace of its own (src/ostree/ot-main.c @ v2022.7).
    rpm-ostree rebase [--bypass-driver] :REF        rpm-ostree >= 2017.6
        kola's command. `:REF` is a local branch since rpm-ostree 752368eb (2017-05-05,
        v2017.6; src/daemon/rpmostreed-utils.cxx). Deployments are refused while an
        update driver (Zincati on Fedora CoreOS) is registered and active, "Updates and
        deployments are driven by ...", unless --bypass-driver (src/app/
        rpmostree-clientlib.cxx, error_if_driver_registered @ v2026.2; the flag exists
        for rebase since 705b22df, v2021.3). kola masks zincati instead; the flag is
        the way rpm-ostree itself offers.
    ostree admin deploy --os=OSNAME REF             otherwise
        refos-ostree has no rpm-ostree; F22's rpm-ostree 2015 `rebase` always pulls
        from a remote (it prefixes the origin's remote to the new ref and calls
        ostree_sysroot_upgrader_pull; src/app/rpmostree-builtin-rebase.c @ v2015.5),
        and its `atomic host` has only status, upgrade and rollback
        (projectatomic/atomic `atomic` @ cc9aed4, 2015-05-20). `ostree admin deploy`
        takes a local ref and never pulls (src/ostree/ot-admin-builtin-deploy.c
        @ v2015.6 and v2022.7).

    systemctl mask --now zincati.service            where the unit exists
        kola masks Zincati before rebasing ("no zincati because we're intentionally
        overriding, also it fails", deployments.go): Zincati fails on a deployment whose
        base carries no Fedora CoreOS stream (coreos/zincati src/rpm_ostree/
        cli_status.rs @ be76c4a, fedora_coreos_stream_from_deployment), and a failed
        unit would fail "boot finished". Fedora CoreOS's own manual rollback stops it
        first too (coreos/fedora-coreos-docs modules/ROOT/pages/manual-rollbacks.adoc
        @ 3be52760).

Rollback makes the previous deployment the default for the next boot:

    atomic host rollback        where `atomic` exists: it runs `rpm-ostree rollback`
                                (Atomic/atomic.py host_rollback @ cc9aed4); F22's command
    rpm-ostree rollback         where rpm-ostree exists (src/app/rpmostree-builtin-
                                rollback.c @ v2015.5; only deploy, rebase and upgrade check
                                the update driver, src/app/*.cxx @ v2026.2)
    ostree admin deploy --retain --os=OSNAME CHECKSUM
                                ostree 2022.7 has no command that reorders deployments:
                                `undeploy` refuses the booted one ("Cannot undeploy
                                currently booted deployment", ot-admin-builtin-undeploy.c)
                                and `set-default` came in v2023.6 (3cd3251a). So the
                                previous commit is deployed again as the new default,
                                --retain keeping every other deployment ("Do not delete
                                previous deployment", man/ostree-admin-deploy.xml
                                @ v2022.7). Unlike rpm-ostree rollback, /etc is merged
                                from the booted deployment, and the serial grows by one.

Status: `rpm-ostree status --json` where rpm-ostree has it (b7d1b827, 2016-06-09,
first in v2016.4); `ostree admin status` otherwise, which prints the full checksum
(rpm-ostree's 2015 table cuts it to 10 characters: CSUM_DISP_LEN in
src/app/rpmostree-builtin-status.c @ v2015.5). Which rpm-ostree runs is read from
`rpm-ostree --version`: "rpm-ostree" alone before v2015.10 (src/app/main.c @ v2015.5),
"rpm-ostree 2016.4" from 25ae79bc (v2015.10), "rpm-ostree:\\n Version: '2024.6'" from
2018 (src/app/libmain.cxx @ v2026.2).

No automatic fallback exists in this family (the catalog says so in each distro's
words), so there is no broken update to stage.
"""

import json
import re
import shlex
from dataclasses import dataclass, replace

from harness.updates import (
    PreconditionMissing,
    Refused,
    SlotStatus,
    classify_failure,
    run_update,
)
from harness.vm import timeouts

REF = "harness/update"  # the local branch the offline update is committed to
MARKER = "/usr/lib/harness-update/version"  # in the new commit only; holds its version
STAGING = "/var/tmp/harness-update"  # the guest's; the update's marker tree meanwhile

# rpm-ostree releases (year, number) from which a behaviour exists; see the docstring.
STATUS_JSON = (2016, 4)
LOCAL_REBASE = (2017, 6)
BYPASS_DRIVER = (2021, 3)
# Before v2015.10 `rpm-ostree --version` printed no version.
BEFORE_VERSIONED = (2015, 0)

DRIVER_REFUSAL = "Updates and deployments are driven by"
UPDATE_AGENTS = ("zincati.service",)  # stopped for good before an offline update


@dataclass(frozen=True)
class Deployment:
    """One line of `ostree admin status`, or one object of `rpm-ostree status --json`."""

    osname: str
    checksum: str
    serial: int
    booted: bool
    version: str = ""

    def slot(self) -> SlotStatus:
        """The checksum names the tree, whichever deployment (serial) holds it."""
        return SlotStatus(self.checksum, self.version)


# `ostree admin status`: g_print ("%c %s %s.%d%s\n", booted ? '*' : ' ', osname, csum,
# deployserial, " (staged)" | " (pending)" | " (rollback)" | ""), then indented lines,
# "    Version: %s" among them (src/ostree/ot-admin-builtin-status.c @ v2022.7; the same
# line without the parenthesis @ v2015.6, the Version line since 81a48445, v2014.9).
_ADMIN_LINE = re.compile(
    r"^(?P<mark>[* ]) (?P<osname>\S+) (?P<csum>[0-9a-f]+)\.(?P<serial>\d+)"
    r"(?: \((?:staged|pending|rollback)\))?$")


def parse_admin_status(text: str) -> list[Deployment]:
    """Every deployment `ostree admin status` lists, in its order (the first boots next)."""
    found: list[Deployment] = []
    for line in text.splitlines():
        m = _ADMIN_LINE.match(line)
        if m:
            found.append(Deployment(m["osname"], m["csum"], int(m["serial"]),
                                    m["mark"] == "*"))
        elif found and line.strip().startswith("Version:"):
            found[-1] = _with_version(found[-1], line.split(":", 1)[1].strip())
    if not found:
        raise ValueError(f"ostree admin status lists no deployment: {text!r}")
    return found


def _with_version(d: Deployment, version: str) -> Deployment:
    return replace(d, version=version)


def parse_status_json(text: str) -> list[Deployment]:
    """Every deployment of `rpm-ostree status --json`, in its order. `id` is
    "osname-checksum.serial" (rust/src/deployment_utils.rs, deployment_generate_id
    @ v2026.2)."""
    found = []
    for d in json.loads(text).get("deployments", []):
        serial = int(d["id"].rsplit(".", 1)[1]) if "id" in d else 0
        found.append(Deployment(d["osname"], d["checksum"], serial, bool(d.get("booted")),
                                d.get("version") or ""))
    if not found:
        raise ValueError("rpm-ostree status --json lists no deployment")
    return found


def booted(deployments: list[Deployment]) -> Deployment:
    for d in deployments:
        if d.booted:
            return d
    raise ValueError(f"no deployment is marked booted: {deployments}")


def next_boot(deployments: list[Deployment]) -> Deployment | None:
    """The deployment staged or pending for the next boot: the first one listed, when it
    is not the booted one (libostree keeps the default first; a staged deployment is
    listed first too)."""
    first = deployments[0]
    return None if first.booted else first


def rollback_target(deployments: list[Deployment]) -> Deployment:
    """The previous deployment: the first of the booted one's OS listed after it
    (libostree's ostree_sysroot_query_deployments_for; `ostree admin status` marks it
    "(rollback)" @ v2022.7)."""
    now = booted(deployments)
    after = deployments[deployments.index(now) + 1:]
    for d in after:
        if d.osname == now.osname:
            return d
    raise ValueError(f"no deployment to roll back to after {now.checksum[:10]}")


def parse_release(text: str) -> tuple[int, int]:
    """(year, number) from `rpm-ostree --version`; BEFORE_VERSIONED when it prints none."""
    m = re.search(r"\b(20\d\d)\.(\d+)\b", text)
    return (int(m[1]), int(m[2])) if m else BEFORE_VERSIONED


@dataclass(frozen=True)
class Tools:
    """What the guest has: rpm-ostree's release (None: no rpm-ostree) and `atomic`."""

    rpm_ostree: tuple[int, int] | None
    atomic: bool = False

    def has(self, release: tuple[int, int]) -> bool:
        return self.rpm_ostree is not None and self.rpm_ostree >= release

    def status_command(self) -> str:
        return "rpm-ostree status --json" if self.has(STATUS_JSON) else "ostree admin status"

    def parse_status(self, text: str) -> list[Deployment]:
        return parse_status_json(text) if self.has(STATUS_JSON) else parse_admin_status(text)

    def deploy_command(self, osname: str, ref: str) -> str:
        """Make the local `ref` the next boot, without a network."""
        if self.has(LOCAL_REBASE):
            bypass = " --bypass-driver" if self.has(BYPASS_DRIVER) else ""
            return f"rpm-ostree rebase{bypass} :{ref}"
        return f"ostree admin deploy --os={shlex.quote(osname)} {shlex.quote(ref)}"

    def rollback_command(self, previous: Deployment) -> str:
        if self.rpm_ostree is not None:
            return "atomic host rollback" if self.atomic else "rpm-ostree rollback"
        return (f"ostree admin deploy --retain --os={shlex.quote(previous.osname)} "
                f"{previous.checksum}")


def commit_commands(base: Deployment, version: str, ref: str = REF,
                    staging: str = STAGING) -> list[str]:
    """A new commit on `ref`: the booted tree plus MARKER, with `version` in its metadata.
    `staging` holds the marker's tree meanwhile, and is removed."""
    marker, stage = shlex.quote(f"{staging}{MARKER}"), shlex.quote(staging)
    v = shlex.quote(version)
    return [f"rm -rf {stage} && mkdir -p $(dirname {marker}) && printf '%s\\n' {v} > {marker}",
            f"ostree commit --branch={shlex.quote(ref)} --tree=ref={base.checksum} "
            f"--tree=dir={stage} --add-metadata-string=version={v} "
            f"--subject={shlex.quote('harness offline update ' + version)}",
            f"rm -rf {stage}"]


def new_version(current: str) -> str:
    return f"{current}+harness-update" if current else "harness-update"


def classify(output: str, what: str):
    """A failed rpm-ostree/ostree command's outcome: rpm-ostree's update-driver refusal
    is a refusal in its own words, checked first; otherwise `classify_failure`
    (NeedsNetwork only when the output says a host could not be reached)."""
    if DRIVER_REFUSAL in output:
        return Refused(f"{what}: rpm-ostree refused while an update driver is registered "
                       f"(--bypass-driver gets past it)\n{output}")
    return classify_failure(output, what)


class Ostree:
    mechanism = "ostree"

    def __init__(self, distro):
        self.distro = distro

    def tools(self, machine) -> Tools:
        if machine.run("command -v rpm-ostree").status != 0:
            return Tools(None)
        release = parse_release(machine.succeed("rpm-ostree --version"))
        return Tools(release, atomic=machine.run("command -v atomic").status == 0)

    def deployments(self, machine, tools: Tools | None = None) -> list[Deployment]:
        tools = tools or self.tools(machine)
        return tools.parse_status(machine.succeed(tools.status_command()))

    def status(self, machine) -> SlotStatus:
        return booted(self.deployments(machine)).slot()

    def marker(self, machine) -> str:
        """The version in the booted tree's MARKER; "" in a tree the harness did not make."""
        return machine.succeed(f"cat {MARKER} 2>/dev/null || true").strip()

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """Commit the booted tree anew with a new version and MARKER, and deploy it."""
        if kind == "broken":
            raise PreconditionMissing(
                f"{self.distro.name}: OSTree has no automatic fallback here, so no broken "
                "update is staged")
        if kind != "update":
            raise ValueError(f"unknown update kind {kind!r}")
        tools = self.tools(machine)
        base = booted(self.deployments(machine, tools))
        version = new_version(base.version)
        self._stop_update_agents(machine)
        for cmd in commit_commands(base, version):
            self._run(machine, cmd, "ostree commit")
        self._run(machine, tools.deploy_command(base.osname, REF), "deploy")
        staged = next_boot(self.deployments(machine, tools))
        if staged is None:
            raise Refused(f"{self.distro.name}: the deployment left the booted one first")
        return staged.slot()

    def _stop_update_agents(self, machine) -> None:
        for unit in UPDATE_AGENTS:
            if machine.run(f"systemctl cat {unit}").status == 0:
                self._run(machine, f"systemctl mask --now {unit}", f"stop {unit}")

    def rollback(self, machine) -> None:
        tools = self.tools(machine)
        previous = rollback_target(self.deployments(machine, tools))
        self._run(machine, tools.rollback_command(previous), "rollback")

    def abandoned(self, machine, staged: SlotStatus) -> bool:
        """Nothing in this family falls back by itself (see the catalog's notes)."""
        return False

    def _run(self, machine, cmd: str, what: str) -> str:
        return run_update(machine, cmd, f"{self.distro.name}: {what}", timeouts.get("ready"),
                          classify=classify)
