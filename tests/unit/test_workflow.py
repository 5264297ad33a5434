"""The nightly workflow: valid against GitHub's workflow schema (check-jsonschema's
vendored copy, read offline), and wired to the catalog's job list."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import catalog, cli
from harness.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
CHECKER = Path(sys.executable).parent / "check-jsonschema"


def _check(path: Path) -> subprocess.CompletedProcess:
    if not CHECKER.exists() and not shutil.which("check-jsonschema"):
        pytest.fail("check-jsonschema is missing: install the dev extras (pip install -e '.[dev]')")
    exe = str(CHECKER) if CHECKER.exists() else "check-jsonschema"
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_workflow_passes_the_github_workflow_schema():
    result = _check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    """The checker is real: a job without runs-on, and an unknown key, are refused."""
    broken = yaml.safe_load(WORKFLOW.read_text())
    del broken["jobs"]["plan"]["runs-on"]
    broken["jobs"]["report"]["stepz"] = []
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _check(path).returncode != 0


def _workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_workflow_runs_nightly_and_on_demand():
    on = _workflow()["on"]
    assert "schedule" in on and "workflow_dispatch" in on


def test_every_needed_job_exists():
    jobs = _workflow()["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, f"{name} needs unknown job {need}"


def test_distro_jobs_come_from_the_catalog_job_list(capsys):
    jobs = _workflow()["jobs"]
    plan_steps = " ".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert "harness list --json" in plan_steps
    assert jobs["distro"]["strategy"]["matrix"]["include"] == \
        "${{ fromJSON(needs.plan.outputs.jobs) }}"
    # What the plan step writes to $GITHUB_OUTPUT must be one line of JSON objects
    # with the keys the distro job reads.
    assert cli.main(["list", "--json"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out
    listed = json.loads(out)
    assert [j["distro"] for j in listed] == list(catalog.load())
    assert all({"distro", "memory_mib", "firmware"} <= set(j) for j in listed)


def test_results_and_report_are_uploaded_even_after_failures():
    jobs = _workflow()["jobs"]
    uploads = [s for s in jobs["distro"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads and all(s.get("if") == "always()" for s in uploads)
    assert "always()" in jobs["report"]["if"]
    assert any("harness report" in s.get("run", "") for s in jobs["report"]["steps"])


# -- the system it runs on, and the cache between nights (issue 31, item 1) -------------

RELEASE = "debian:bookworm"  # the release make deps names its packages for


def _debs() -> list[str]:
    """The Debian packages `make deps` installs, and those the workflow's own
    bootstrap steps install before it."""
    text = (REPO / "Makefile").read_text()
    block = re.search(r"^DEBS := ((?:.*\\\n)*.*)$", text, re.M)
    names = block[1].replace("\\\n", " ").split()
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                if "apt-get install" in line:
                    names += [w for w in line.split("apt-get install", 1)[1].split()
                              if not w.startswith("-")]
    return names


def test_every_job_runs_in_the_debian_release_make_deps_is_written_for():
    for name, job in _workflow()["jobs"].items():
        container = job.get("container")
        image = container if isinstance(container, str) else (container or {}).get("image")
        assert image == RELEASE, f"job {name} runs on {image or job['runs-on']}, not {RELEASE}"
        assert not any("sudo " in s.get("run", "") for s in job["steps"]), \
            f"job {name} uses sudo: the container runs as root and has none"


def test_every_package_the_jobs_install_exists_in_that_release():
    """Checked against this host's bookworm package lists (apt-cache, offline)."""
    if "VERSION_CODENAME=bookworm" not in Path("/etc/os-release").read_text():
        pytest.skip("this host is not Debian bookworm: its package lists cannot say")
    names = set(_debs())
    # One call; apt-cache says nothing (and exits 0) for a name it does not know.
    shown = subprocess.run(["apt-cache", "show", "--no-all-versions", *sorted(names)],
                           capture_output=True, text=True, check=False).stdout
    found = set(re.findall(r"^Package: (\S+)$", shown, re.M))
    assert names <= found, f"not packages of Debian bookworm: {sorted(names - found)}"


def test_the_distro_job_gets_the_hosts_kvm_and_may_run_libvirtd():
    options = _workflow()["jobs"]["distro"]["container"].get("options", "")
    assert "--privileged" in options or "--device /dev/kvm" in options


def test_the_cache_stays_roots_and_is_never_handed_to_another_user():
    data = _workflow()
    cache = data["env"]["HARNESS_CACHE"]
    assert cache.startswith("/") and "github.workspace" not in cache
    for job in data["jobs"].values():
        for step in job["steps"]:
            assert "chown" not in step.get("run", ""), step.get("name")
