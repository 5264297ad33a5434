"""refos-snap: refos where Docker is not Debian's service but a strictly confined snap.

Nothing comes from the snap store. From a copy of the bootstrapped refos tree the
build packs three snaps with Debian's own `snap pack`, run in that tree:

- `snapd`: Debian's snapd package repacked as the snapd snap, the way snapd's
  spread tests repack the deb they built (canonical/snapd tests/lib/prepare.sh
  @ 2.57.6, repack_snapd_snap_with_deb_content). snapd installs the snapd snap
  from the store before any snap whose base is not `core`, unless it is already
  installed (overlord/snapstate/handlers.go @ 2.57.6, installPrereqs);
- `core22`: a Debian bookworm minbase made by a second mmdebstrap run, with
  what Docker links against and calls;
- `docker`: Debian's docker.io, containerd and runc binaries with a `dockerd`
  daemon app and a `docker` command (images/refos/snap/docker/meta/snap.yaml).

Then Debian's Docker packages are purged, snapd is installed, and the first boot
installs the snaps with `snap install --dangerous`
(images/refos/overlay-snap/usr/lib/refos/snaps-install says why not seeding).
"""

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from harness.images import steps
from harness.log import step

SNAPS = steps.RECIPE / "snap"
OVERLAY = steps.RECIPE / "overlay-snap"
BUILD_DIR = "/run/refos-snap-build"  # inside the tree; removed before the disk is made
SNAP_DIR = "/usr/lib/refos/snaps"  # where the image carries the packed snaps
# Debian's Docker binaries the docker snap carries (docker.io, containerd, runc, tini).
DOCKER_FILES = (
    "usr/bin/docker", "usr/sbin/dockerd", "usr/sbin/docker-proxy", "usr/bin/docker-init",
    "usr/bin/tini-static", "usr/bin/containerd", "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc",
)
# Mount points snap-confine binds from the host into a base (canonical/snapd
# cmd/snap-confine/mount-support.c @ 2.57.6, sc_bootstrap_mount_namespace).
BASE_MOUNT_POINTS = ("snap", "usr/lib/snapd", "usr/src", "var/snap", "var/lib/snapd",
                     "var/log", "media", "mnt", "lib/modules", "lib/firmware", "home", "root")


@contextmanager
def base_in_background(out: Path, recipe: dict) -> Iterator[Future]:
    """Bootstrap the base snap's tree in the background, beside refos's own
    mmdebstrap run (it needs nothing from it): about 80 s less on a cold build.
    Leaving the block waits for it, whether the build went on or failed."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="base-snap")
    try:
        yield pool.submit(_base, out / "core22", recipe["suite"],
                          recipe["snap"]["base_packages"])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_disk(out: Path, tree: Path, recipe: dict, build_id: str,
               boot: tuple[Path, Path], base: Future) -> None:
    """Turn `tree` (a copy of refos's) into refos-snap.qcow2 in `out`, then remove
    it and the packages the bootstrap downloaded for it; `base` is
    base_in_background's bootstrap."""
    variant, debs = recipe["snap"], out / "snap-debs"
    work = tree / BUILD_DIR.lstrip("/")
    work.mkdir(parents=True)
    with step("refos-snap: stage the docker snap from Debian's binaries", "image"):
        _stage(SNAPS / "docker", work / "docker", _version(tree, "docker.io"))
        for name in DOCKER_FILES:
            dest = work / "docker" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / name, dest, follow_symlinks=False)
    with step("refos-snap: snapd in, Debian's Docker out", "image"):
        # No autoremove: iptables stays, and the host's /etc/alternatives is what the
        # snap sees too (snap-confine binds /etc).
        steps.install_debs(tree, debs, variant["remove"], autoremove=False)
    with step("refos-snap: wait for the base snap's mmdebstrap", "image"):
        base.result()
    steps.run("mv", str(out / "core22"), str(work / "core22"))
    _stage(SNAPS / "snapd", work / "snapd", _version(tree, "snapd"))
    steps.run("dpkg-deb", "-x", str(steps.one(debs, "snapd_*.deb")), str(work / "snapd"))
    (tree / SNAP_DIR.lstrip("/")).mkdir(parents=True)
    for name in ("snapd", "core22", "docker"):
        with step(f"refos-snap: snap pack {name}", "image"):
            steps.chroot(tree, f"snap pack --compression={variant['compression']} "
                               f"{BUILD_DIR}/{name} --filename={SNAP_DIR}/{name}.snap")
    steps.remove_tree(work)
    steps.run("cp", "-a", str(OVERLAY) + "/.", str(tree))
    steps.run("chroot", str(tree), "systemctl", "enable", "refos-snaps.service",
              stdout=subprocess.DEVNULL)
    version = recipe["versions"]["base"]
    steps.set_release(tree, version, build_id, "snap")
    with step(f"disk refos-snap.qcow2 (version {version})", "image"):
        steps.ab_disk(out, tree, "refos-snap", recipe["disk"], version, boot)
    steps.remove_tree(tree)
    shutil.rmtree(debs)


def _version(tree: Path, package: str) -> str:
    """The Debian version of `package` in `tree`: the snap's version."""
    return steps.run("chroot", str(tree), "dpkg-query", "-W", "-f=${Version}", package,
                     capture_output=True, text=True).stdout.strip()


def _stage(source: Path, dest: Path, version: str) -> None:
    """Copy a snap's recipe (meta/, bin/) into `dest` and put `version` into its snap.yaml."""
    shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
    yaml = dest / "meta" / "snap.yaml"
    yaml.write_text(yaml.read_text().replace("@VERSION@", version))


def _base(dest: Path, suite: str, packages: list[str]) -> None:
    """A bookworm minbase as a base snap's tree: the mount points snap-confine needs;
    no package lists, caches, documentation, translations or Perl modules (nothing
    in the snap runs perl; less to compress: `snap pack` is the slow step)."""
    hook = " && ".join([
        "cd \"$1\"",
        "mkdir -p " + " ".join(BASE_MOUNT_POINTS),
        "rm -rf var/lib/apt/lists/* var/cache/apt/* usr/share/doc/* usr/share/man/* "
        "usr/share/info/* usr/share/locale/* usr/share/perl usr/lib/x86_64-linux-gnu/perl",
    ])
    steps.run("mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages),
              "--components=main", f"--customize-hook={hook}", suite, str(dest),
              stdout=subprocess.DEVNULL)
    _stage(SNAPS / "core22", dest, (dest / "etc/debian_version").read_text().strip())
