"""The OSTree family's adapter (harness.updates.ostree): its parsers on real outputs,
each naming where it was taken from, and the commands it picks for each tool set.

Samples:
- samples/ostree/fcos-staged-status.json: `rpm-ostree status --json` on Fedora CoreOS
  37.20230122.3.0 with an update staged, verbatim from coreos/rpmostree-client-go
  pkg/client/test-fixtures/fcos-with-overrides-status.json @ 96ee4fd5 (2023-03-03).
- OSTREE_2015: the example of ostreedev/ostree doc/ostree-admin-status.xml @ v2015.7
  (June 2015, the `ostree admin status` of Fedora 22's time), dedented; its checksums
  are shortened in the original.
- F22_FIRST_BOOT: `ostree admin status` of a Fedora 22 Atomic host before its first
  upgrade, in the format of src/ostree/ot-admin-builtin-status.c @ v2015.6 with the
  values that host printed (mrjoshuap/SATraining intro/3_manageAtomicHosts.md @ a88e351b,
  2015-09-24: osname fedora-atomic, version 22.17, the full checksum from
  `atomic host rollback`'s "Moving '06a63ecf….0' to be first deployment", refspec).
- samples/ostree/refos-ostree-booted.txt and refos-ostree-pending.txt: `ostree admin
  status` captured on a booted refos-ostree guest (Debian's ostree 2022.7; branch
  ostree-image @ 716f631, 2026-11-28), before and after `ostree admin deploy` of a
  commit made in the guest the adapter's way (version 2).
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import catalog
from harness.plugin.promises import unmet
from harness.updates import (
    NeedsNetwork,
    NetworkUpdater,
    PreconditionMissing,
    Refused,
    SlotStatus,
    applicability,
    pytest_verdict,
    updater,
)
from harness.updates import ostree as ot
from harness.vm.ssh import Result

SAMPLES = Path(__file__).parent / "samples" / "ostree"
FCOS_STAGED = (SAMPLES / "fcos-staged-status.json").read_text()
FCOS_BOOTED = "23bfcb638fcee121d5d257349c1c964b111f7df4e9895f602e671faa9ec7a607"
FCOS_NEXT = "683faf6b42711761e9af070a0f23f9b068ec2b81cc618debcc760b025621e27b"

OSTREE_2015 = """\
* gnome-ostree 67e382b11d213a402a5313e61cbc69dfd5ab93cb07.0
    origin refspec: gnome-ostree/buildmaster/x86_64-runtime
  gnome-ostree ce19c41036cc45e49b0cecf6b157523c2105c4de1c.0
    origin refspec: gnome-ostree/buildmaster/x86_64-runtime
"""

F22_CHECKSUM = "06a63ecfcf053d1625e9ddf406429eef3c7fe3ecccbe636a54b90175a5899e7d"
F22_FIRST_BOOT = f"""\
* fedora-atomic {F22_CHECKSUM}.0
    Version: 22.17
    origin refspec: fedora-atomic:fedora-atomic/f22/x86_64/docker-host
"""


def test_fcos_json_gives_the_booted_deployment_and_the_staged_one_first():
    deployments = ot.parse_status_json(FCOS_STAGED)
    assert ot.booted(deployments).slot() == SlotStatus(FCOS_BOOTED, "37.20230122.3.0")
    staged = ot.next_boot(deployments)
    assert staged == ot.Deployment("fedora-coreos", FCOS_NEXT, 0, booted=False,
                                   version="37.20230122.3.0")


def test_fcos_json_serial_is_read_from_the_id():
    data = json.loads(FCOS_STAGED)
    data["deployments"][1]["id"] = f"fedora-coreos-{FCOS_BOOTED}.3"
    assert ot.booted(ot.parse_status_json(json.dumps(data))).serial == 3


def test_fcos_json_with_nothing_staged_has_no_next_boot_but_a_rollback():
    data = json.loads(FCOS_STAGED)
    data["deployments"].reverse()  # booted first, the other one after it
    deployments = ot.parse_status_json(json.dumps(data))
    assert ot.next_boot(deployments) is None
    assert ot.rollback_target(deployments).checksum == FCOS_NEXT


def test_json_without_deployments_is_an_error():
    with pytest.raises(ValueError, match="no deployment"):
        ot.parse_status_json('{"deployments": []}')


def test_ostree_2015_example_booted_first_and_the_other_is_the_rollback():
    deployments = ot.parse_admin_status(OSTREE_2015)
    assert [d.checksum[:6] for d in deployments] == ["67e382", "ce19c4"]
    assert ot.booted(deployments).version == ""  # the example's commits carry none
    assert ot.next_boot(deployments) is None
    assert ot.rollback_target(deployments).checksum.startswith("ce19c41036")


def test_f22_admin_status_gives_checksum_and_version():
    deployments = ot.parse_admin_status(F22_FIRST_BOOT)
    assert ot.booted(deployments).slot() == SlotStatus(F22_CHECKSUM, "22.17")
    with pytest.raises(ValueError, match="no deployment to roll back to"):
        ot.rollback_target(deployments)


REFOS_BOOTED = (SAMPLES / "refos-ostree-booted.txt").read_text()
REFOS_PENDING = (SAMPLES / "refos-ostree-pending.txt").read_text()
REFOS_1 = "9645eeab6e4a8fef3d7f7c2ae60b47de3ea7a8ffaef48b5a193a3128a8969127"
REFOS_2 = "7f8cf81ae9a3cf950184b09e4534d7f6f5b7bfdde618563d5f2e118dc859477e"


def test_refos_ostree_booted_status_gives_its_commit_and_version():
    deployments = ot.parse_admin_status(REFOS_BOOTED)
    assert [d.slot() for d in deployments] == [SlotStatus(REFOS_1, "1")]
    assert ot.booted(deployments).osname == "refos" and ot.next_boot(deployments) is None


def test_refos_ostree_pending_deployment_is_listed_first_with_its_version():
    deployments = ot.parse_admin_status(REFOS_PENDING)
    assert ot.next_boot(deployments).slot() == SlotStatus(REFOS_2, "2")
    assert ot.booted(deployments).slot() == SlotStatus(REFOS_1, "1")


def test_admin_status_without_a_deployment_is_an_error():
    with pytest.raises(ValueError, match="lists no deployment"):
        ot.parse_admin_status("No deployments.\n")


# `rpm-ostree --version`, in the three forms of its history, from the printf of each:
# g_print ("%s\n  %s\n", PACKAGE_NAME, RPM_OSTREE_FEATURES) (src/app/main.c @ v2015.5,
# features " +compose" from configure.ac), PACKAGE_STRING from v2015.10 (25ae79bc), YAML
# " Version: '%s'" from 79d4e52d (v2018.10; src/app/libmain.cxx @ v2026.2).
@pytest.mark.parametrize(("text", "release"), [
    ("rpm-ostree\n   +compose\n", ot.BEFORE_VERSIONED),
    ("rpm-ostree 2016.4\n   +compose\n", (2016, 4)),
    ("rpm-ostree:\n Version: '2024.6'\n Git: 5e1a1d23\n Features:\n  - rust\n  - compose\n",
     (2024, 6)),
])
def test_rpm_ostree_release_from_each_version_format(text, release):
    assert ot.parse_release(text) == release


@pytest.mark.parametrize(("tools", "status", "deploy", "rollback"), [
    # refos-ostree: no rpm-ostree
    (ot.Tools(None), "ostree admin status", "ostree admin deploy --os=refos harness/update",
     f"ostree admin deploy --retain --os=refos {FCOS_BOOTED}"),
    # Fedora 22 Atomic: rpm-ostree of 2015 (no --json, no local rebase) and `atomic host`
    (ot.Tools(ot.BEFORE_VERSIONED, atomic=True), "ostree admin status",
     "ostree admin deploy --os=refos harness/update", "atomic host rollback"),
    # rpm-ostree with --json but before `rebase :REF`
    (ot.Tools((2016, 4)), "rpm-ostree status --json",
     "ostree admin deploy --os=refos harness/update", "rpm-ostree rollback"),
    # rpm-ostree with `rebase :REF`, before --bypass-driver
    (ot.Tools((2020, 7)), "rpm-ostree status --json", "rpm-ostree rebase :harness/update",
     "rpm-ostree rollback"),
    # Fedora CoreOS
    (ot.Tools((2024, 6)), "rpm-ostree status --json",
     "rpm-ostree rebase --bypass-driver :harness/update", "rpm-ostree rollback"),
])
def test_each_tool_set_gets_its_own_commands(tools, status, deploy, rollback):
    previous = ot.Deployment("refos", FCOS_BOOTED, 0, booted=False)
    assert tools.status_command() == status
    assert tools.deploy_command("refos", ot.REF) == deploy
    assert tools.rollback_command(previous) == rollback


def test_the_update_commit_is_the_booted_tree_with_a_marker_and_a_new_version():
    base = ot.Deployment("refos", FCOS_BOOTED, 0, booted=True, version="1")
    script = "\n".join(ot.commit_commands(base, ot.new_version(base.version)))
    assert f"--tree=ref={FCOS_BOOTED}" in script
    assert "--add-metadata-string=version=1+harness-update" in script
    assert f"> /var/tmp/harness-update{ot.MARKER}" in script
    assert "--tree=dir=/var/tmp/harness-update " in script  # the marker's tree, overlaid
    assert "--branch=harness/update" in script


class Guest:
    """Answers commands with recorded outputs and keeps the commands it was given: a
    stand-in for an OSTree guest, to see which commands the adapter runs for a tool set
    and to inject what no guest here can produce (Zincati's refusal, an unreachable
    remote). The real sequence runs on refos-ostree in tests/suites/test_rollback.py."""

    def __init__(self, answers: dict[str, object]):
        self.answers, self.ran = answers, []

    def run(self, cmd, timeout=None):
        self.ran.append(cmd)
        for prefix, answer in self.answers.items():
            if cmd.startswith(prefix):
                answer = answer() if callable(answer) else answer
                return answer if isinstance(answer, Result) else Result(0, answer, "")
        return Result(0, "", "")

    def succeed(self, cmd, timeout=None):
        result = self.run(cmd, timeout)
        assert result.status == 0, result.describe(cmd)
        return result.stdout


FCOS_VERSION = "rpm-ostree:\n Version: '2024.6'\n Features:\n  - rust\n"
# rpm-ostree's refusal: error_if_driver_registered's message (src/app/rpmostree-clientlib.cxx
# @ v2026.2), with Zincati's unit name and its Documentation= URL as `systemctl status
# zincati` shows them (coreos/fedora-coreos-tracker#1084), after the "error: " the
# client prints before any error.
ZINCATI = ("error: Updates and deployments are driven by Zincati (zincati.service)\n"
           "See Zincati's documentation at https://github.com/coreos/zincati\n"
           "Use --bypass-driver to bypass Zincati and perform the operation anyways\n")
# An rpm-ostree that cannot reach its repositories, on Fedora CoreOS
# (coreos/rpm-ostree#1602, 2020-09-22, shortened to its first error).
NO_NETWORK = ("error: Updating rpm-md repo 'fedora-cisco-openh264': cannot update repo "
              "'fedora-cisco-openh264': Cannot prepare internal mirrorlist: Curl error (6): "
              "Couldn't resolve host name for https://mirrors.fedoraproject.org/metalink?"
              "repo=fedora-cisco-openh264-33&arch=x86_64 [Could not resolve host: "
              "mirrors.fedoraproject.org]\n")


def fcos_guest(failing: str = "", stderr: str = "") -> Guest:
    """Fedora CoreOS with an update staged; the command starting with `failing` fails."""
    answers: dict[str, object] = {failing: Result(1, "", stderr)} if failing else {}
    return Guest({**answers, "command -v rpm-ostree": "/usr/bin/rpm-ostree\n",
                  "command -v atomic": Result(1, "", ""), "rpm-ostree --version": FCOS_VERSION,
                  "rpm-ostree status --json": FCOS_STAGED})


def test_zincati_refusal_and_an_unreachable_host_are_different_outcomes():
    # The driver's refusal is checked before the network words its message may carry.
    adapter = updater(catalog.get("fedora-coreos"))
    with pytest.raises(Refused, match="update driver is registered") as refused:
        adapter.stage(fcos_guest("rpm-ostree rebase", ZINCATI + NO_NETWORK))
    assert not isinstance(refused.value, NeedsNetwork)
    assert pytest_verdict(refused.value)[0] == "fail"
    with pytest.raises(NeedsNetwork, match="could not be reached") as offline:
        adapter.stage(fcos_guest("rpm-ostree rebase", NO_NETWORK))
    assert pytest_verdict(offline.value)[0] == "skip"


def test_ostree_fetchers_own_words_for_an_unknown_host_need_network():
    # ostree's curl fetcher: "While fetching %s: [%u] %s" with curl_easy_strerror
    # (src/libostree/ostree-fetcher-curl.c @ v2022.7)
    fetch = ("error: While pulling fedora/x86_64/coreos/stable: While fetching "
             "https://ostree.fedoraproject.org/config: [6] Couldn't resolve host name\n")
    assert isinstance(ot.classify(fetch, "upgrade"), NeedsNetwork)


def test_a_failed_deploy_is_a_refusal_in_the_tools_words():
    # rpm-ostree rebase's own error (src/app/rpmostree-builtin-rebase.c @ v2015.5)
    adapter = updater(catalog.get("fedora-coreos"))
    with pytest.raises(Refused, match="Old and new refs are equal"):
        adapter.stage(fcos_guest("rpm-ostree rebase", "error: Old and new refs are equal\n"))


def test_fcos_stage_commits_from_the_booted_tree_and_rebases_past_the_driver():
    guest = fcos_guest()
    staged = updater(catalog.get("fedora-coreos")).stage(guest)
    assert staged == SlotStatus(FCOS_NEXT, "37.20230122.3.0")  # the status's staged one
    commit = next(c for c in guest.ran if c.startswith("ostree commit"))
    assert f"--tree=ref={FCOS_BOOTED}" in commit
    assert "--add-metadata-string=version=37.20230122.3.0+harness-update" in commit
    assert "rpm-ostree rebase --bypass-driver :harness/update" in guest.ran
    # Zincati is masked first, as kola does, so that it does not fail on the new base
    assert guest.ran.index("systemctl mask --now zincati.service") < guest.ran.index(commit)


def refos_guest() -> Guest:
    """No rpm-ostree; `ostree admin status` as refos-ostree printed it before and after
    its deploy."""
    guest = Guest({"command -v rpm-ostree": Result(1, "", ""),
                   "systemctl cat zincati.service": Result(1, "", "No files found")})
    guest.answers["ostree admin status"] = lambda: (
        REFOS_PENDING if any(c.startswith("ostree admin deploy") for c in guest.ran)
        else REFOS_BOOTED)
    return guest


def test_ostree_admin_stage_deploys_the_local_branch_and_returns_the_pending_one():
    guest = refos_guest()
    adapter = ot.Ostree(catalog.get("refos"))
    assert adapter.stage(guest) == SlotStatus(REFOS_2, "2")  # what the status then lists
    assert any(c.startswith("ostree commit") and f"--tree=ref={REFOS_1}" in c and
               "version=1+harness-update" in c for c in guest.ran)
    assert "ostree admin deploy --os=refos harness/update" in guest.ran
    assert not any(c.startswith(("rpm-ostree", "systemctl mask")) for c in guest.ran)


def test_ostree_admin_rollback_redeploys_the_previous_commit_retaining_the_rest():
    booted_new = (f"* refos {FCOS_NEXT}.0\n    Version: 1+harness-update\n"
                  f"  refos {FCOS_BOOTED}.0 (rollback)\n    Version: 1\n")
    guest = Guest({"command -v rpm-ostree": Result(1, "", ""),
                   "ostree admin status": booted_new})
    ot.Ostree(catalog.get("refos")).rollback(guest)
    assert guest.ran[-1] == f"ostree admin deploy --retain --os=refos {FCOS_BOOTED}"


def test_no_broken_update_is_staged_where_nothing_falls_back():
    with pytest.raises(PreconditionMissing, match="no automatic fallback"):
        ot.Ostree(catalog.get("fedora-coreos")).stage(fcos_guest(), "broken")


@pytest.mark.parametrize("name", ["fedora-coreos", "atomic-f22"])
def test_ostree_distros_stage_offline_and_skip_fallback_in_their_own_words(name):
    d = catalog.get(name)
    assert isinstance(updater(d), ot.Ostree) and not isinstance(updater(d), NetworkUpdater)
    assert applicability(d) is None
    assert unmet(["auto_fallback"], d) == f"{name}: {d.promises.notes['fallback']}"


def _sh(cmd: str, repo: Path) -> str:
    """Run a guest command here, in a repo of this test: without --repo, ostree uses the
    repository in the current directory ("defaults to current directory or
    /sysroot/ostree/repo", its --help)."""
    done = subprocess.run(["sh", "-c", cmd], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}\n{done.stderr}"
    return done.stdout


@pytest.mark.skipif(shutil.which("ostree") is None, reason="needs Debian's ostree (make deps)")
def test_the_update_commit_made_by_the_real_ostree_has_the_tree_the_marker_and_the_version(
        tmp_path):
    """The adapter's commit commands, run by Debian's ostree 2022.7 (refos-ostree's own)
    on a repo here: the new commit is the base tree plus the marker, and carries the
    new version."""
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_text("from the booted tree\n")
    repo.mkdir()
    _sh(f"ostree init --repo={repo} --mode=bare-user", repo)
    _sh(f"ostree commit --branch=refos/x86_64/stable --tree=dir={tree} "
        "--add-metadata-string=version=1", repo)
    base = ot.Deployment("refos", _sh("ostree rev-parse refos/x86_64/stable", repo).strip(),
                         0, booted=True, version="1")
    staging = tmp_path / "staging"
    for cmd in ot.commit_commands(base, ot.new_version("1"), staging=str(staging)):
        _sh(cmd, repo)
    assert _sh(f"ostree cat {ot.REF} {ot.MARKER}", repo) == "1+harness-update\n"
    assert _sh(f"ostree cat {ot.REF} /usr/bin/tool", repo) == "from the booted tree\n"
    assert "Version: 1+harness-update" in _sh(f"ostree show {ot.REF}", repo)
    assert not staging.exists()


@pytest.fixture
def sysroot(tmp_path):
    """A directory for a physical sysroot, removable afterwards: ostree makes each
    deployment's root immutable (chattr +i), which would leave it behind."""
    path = tmp_path / "sysroot"
    path.mkdir()
    yield path
    for deployment in path.glob("ostree/deploy/*/deploy/*"):
        if deployment.is_dir():
            subprocess.run(["chattr", "-i", str(deployment)], check=True)


@pytest.mark.skipif(shutil.which("ostree") is None, reason="needs Debian's ostree (make deps)")
def test_ostree_admin_deploy_and_its_rollback_run_for_real_on_a_sysroot(tmp_path, sysroot):
    """refos-ostree's deploy and rollback commands (no rpm-ostree), run by Debian's ostree
    2022.7 on a physical sysroot made here as the refos-ostree build makes its own
    (init-fs, os-init, commit, deploy), with `--sysroot` added since it is not the host's
    booted one: the update becomes the first deployment, and the rollback puts the first
    commit first again while --retain keeps both earlier deployments."""
    tree = tmp_path / "tree"
    kernel = tree / "usr/lib/modules/6.1.0-test"
    kernel.mkdir(parents=True)
    for name in ("vmlinuz", "initramfs.img"):  # where OSTree looks for them
        (kernel / name).write_text(name)
    (tree / "usr/etc").mkdir()
    (tree / "usr/etc/os-release").write_text("ID=refos\n")  # deploy reads it for the entry
    repo = sysroot / "ostree/repo"
    admin = f"ostree admin --sysroot={sysroot}"
    for cmd in (f"ostree admin init-fs {sysroot}",
                f"ostree config --repo={repo} set sysroot.bootloader none",
                f"{admin} os-init refos",
                f"ostree commit --repo={repo} --branch=refos/x86_64/stable --tree=dir={tree} "
                "--add-metadata-string=version=1",
                f"{admin} deploy --os=refos refos/x86_64/stable"):
        _sh(cmd, tmp_path)
    tools = ot.Tools(None)
    [base] = ot.parse_admin_status(_sh(f"{admin} status", tmp_path))

    for cmd in ot.commit_commands(base, "2", staging=str(tmp_path / "staging")):
        _sh(cmd, repo)
    _sh(tools.deploy_command("refos", ot.REF).replace("ostree admin", admin), tmp_path)
    deployed = ot.parse_admin_status(_sh(f"{admin} status", tmp_path))
    assert [(d.checksum == base.checksum, d.version) for d in deployed] == \
        [(False, "2"), (True, "1")]

    _sh(tools.rollback_command(base).replace("ostree admin", admin), tmp_path)
    rolled = ot.parse_admin_status(_sh(f"{admin} status", tmp_path))
    assert [(d.checksum, d.serial) for d in rolled] == \
        [(base.checksum, 1), (deployed[0].checksum, 0), (base.checksum, 0)]
