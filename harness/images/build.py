"""Build refos from Debian packages: a UEFI GPT disk (ESP, ROOT-A, ROOT-B, STATE)
and the update payloads that refos-update installs.

The steps every disk is made of (GPT, ESP, file systems, no loop devices) are in
steps.py, which the variants (ostree.py, snap.py) use too; this module puts them
together. Results are cached under a hash of the recipe directory and the builder's
modules (this one and those it imports), so a build is skipped when nothing changed;
a build runs in a scratch directory and is renamed into place only when complete.
"""

import ast
import hashlib
import json
import shutil
import subprocess
import tarfile
import time
import tomllib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from harness import safefs
from harness.images import ostree, snap
from harness.images.steps import (
    MIB,
    RECIPE,
    BuildError,
    ab_disk,
    install_debs,
    one,
    remove_tree,
    run,
    set_release,
    squashfs,
)
from harness.log import log, step
from harness.paths import REPO, cache_dir, make_dirs
from harness.registry import BUILT_DISKS

__all__ = ["RECIPE", "Artifacts", "BuildError", "artifacts", "build", "recipe_hash"]
PACKAGE = "harness.images."

# The variants built from copies of refos's tree (recipe tables of those names).
VARIANTS = ("ignition", "ostree", "snap")


@dataclass(frozen=True)
class Artifacts:
    """What one refos build produced; every path is inside the cache."""

    root: Path

    def disk_file(self, name: str) -> Path:
        """The disk the catalog's `image.build` names."""
        return self.root / BUILT_DISKS[name]

    @property
    def disk(self) -> Path:
        return self.disk_file("disk")

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    def payload(self, kind: str, image: str = "disk") -> Path:
        """`update` or `broken`: a tar that refos-update takes, for the disk named by
        the catalog's `image.build` (refos-ignition has payloads of its own)."""
        prefix = "payload-ignition" if image == "ignition_disk" else "payload"
        return self.root / f"{prefix}-{kind}.tar"

    def manifest(self) -> dict:
        return json.loads((self.root / "build.json").read_text())


def recipe_hash() -> str:
    """Hash of every recipe file (name, mode, bytes) and of the builder's modules."""
    h = hashlib.sha256()
    files = sorted(p for p in RECIPE.rglob("*") if p.is_file())
    for p in [*files, *builder_modules()]:
        h.update(str(p.relative_to(REPO)).encode() + b"\0")
        h.update(oct(p.stat().st_mode & 0o777).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def builder_modules(start: Path = Path(__file__)) -> list[Path]:
    """`start` and every module of its package it imports, directly or through another:
    the code that shapes the image. Derived, not listed, so a step moved into a module
    of its own stays in the recipe's hash."""
    found: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path not in found:
            found.add(path)
            todo += [m for name in _package_imports(path)
                     if (m := start.with_name(f"{name}.py")).is_file()]
    return sorted(found)


def _package_imports(path: Path) -> set[str]:
    """Names of the harness.images modules `path` imports (anywhere, functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "harness.images":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            names.add(node.module.removeprefix(PACKAGE).split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix(PACKAGE).split(".")[0] for a in node.names
                      if a.name.startswith(PACKAGE)}
    return names


def load_recipe() -> dict:
    return tomllib.loads((RECIPE / "recipe.toml").read_text())


def artifacts() -> Artifacts:
    """Where the current recipe's build lives (built or not)."""
    return Artifacts(cache_dir() / "images" / f"refos-{recipe_hash()}")


def build(force: bool = False) -> Artifacts:
    """Build refos unless the cache already has this recipe's result."""
    out = artifacts()
    make_dirs(out.root.parent)
    with safefs.locked(out.root.with_suffix(".lock"), cache_dir()):
        if (out.root / "build.json").exists() and not force:
            log.info("refos: cached build %s", out.root)
            return out
        scratch = out.root.with_name(out.root.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        make_dirs(scratch)  # 0755 whatever the umask: the cache's checks refuse 0775
        try:
            with step(f"build refos {out.root.name}", "image"):
                _build_into(scratch, load_recipe(), out.root.name.split("-", 1)[1])
            shutil.rmtree(out.root, ignore_errors=True)
            scratch.rename(out.root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def _build_into(out: Path, recipe: dict, build_id: str) -> None:
    started = time.monotonic()
    # The base snap's bootstrap runs beside refos's; leaving the block waits for it,
    # also when a step failed, so it never writes into a removed build folder.
    with snap.base_in_background(out, recipe) as base:
        _build_disks(out, recipe, build_id, base)
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    manifest = {
        "build_id": build_id,
        "versions": recipe["versions"],
        "sizes": sizes,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "build.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name, size in sorted(sizes.items()):
        log.info("image: %-28s %8.1f MiB", name, size / MIB)


def _build_disks(out: Path, recipe: dict, build_id: str, base: Future) -> None:
    """refos's disks and payloads, then each variant's from a copy of its tree."""
    tree = out / "tree"
    with step("mmdebstrap rootfs (Debian packages)", "image"):
        _bootstrap(tree, recipe, out)
    shutil.copy(one(tree / "boot", "vmlinuz-*"), out / "vmlinuz")
    shutil.copy(one(tree / "boot", "initrd.img-*"), out / "initrd.img")
    versions = recipe["versions"]
    boot = (out / "vmlinuz", out / "initrd.img")
    _payloads(out, tree, versions, build_id, "payload", boot)
    set_release(tree, versions["base"], build_id, "default")
    with step(f"disk refos.qcow2 (version {versions['base']})", "image"):
        ab_disk(out, tree, "refos", recipe["disk"], versions["base"], boot)
    ignition, ostree_tree, snap_tree = (out / f"tree-{v}" for v in VARIANTS)
    with step("copy the tree for refos-ignition, refos-ostree and refos-snap", "image"):
        for copy in (ignition, ostree_tree, snap_tree):
            run("cp", "-a", "--reflink=auto", str(tree), str(copy))
    run("chroot", str(tree), "dpkg", "--purge", "apparmor", stdout=subprocess.DEVNULL)
    set_release(tree, versions["base"], build_id, "noapparmor")
    with step(f"disk refos-noapparmor.qcow2 (version {versions['base']})", "image"):
        ab_disk(out, tree, "refos-noapparmor", recipe["disk"], versions["base"], boot)
    remove_tree(tree)
    with step("refos-ignition: dracut and Ignition in, cloud-init out", "image"):
        _ignition_tree(ignition, out / "ignition-debs", recipe["ignition"])
    shutil.copy(one(ignition / "boot", "initrd.img-*"), out / "initrd-ignition.img")
    boot = (out / "vmlinuz", out / "initrd-ignition.img")
    _payloads(out, ignition, versions, build_id, "payload-ignition", boot)
    set_release(ignition, versions["base"], build_id, "ignition")
    with step(f"disk refos-ignition.qcow2 (version {versions['base']})", "image"):
        ab_disk(out, ignition, "refos-ignition", recipe["disk"], versions["base"], boot,
                recipe["ignition"]["firstboot_args"])
    remove_tree(ignition)
    shutil.rmtree(out / "ignition-debs")
    ostree.build_disk(out, ostree_tree, recipe["ostree"], versions["base"], build_id)
    snap.build_disk(out, snap_tree, recipe, build_id, (out / "vmlinuz", out / "initrd.img"),
                    base)


def _payloads(out: Path, tree: Path, versions: dict, build_id: str, prefix: str,
              boot: tuple[Path, Path]) -> None:
    for kind in ("update", "broken"):
        set_release(tree, versions[kind], build_id, kind)
        with step(f"{prefix} {kind} (version {versions[kind]})", "image"):
            _payload(out, tree, f"{prefix}-{kind}.tar", versions[kind], build_id, boot)


def _ignition_tree(tree: Path, debs: Path, variant: dict) -> None:
    """Turn a copy of the refos tree into refos-ignition, offline: the packages were
    downloaded by the bootstrap; installing dracut runs it for the kernel."""
    run("cp", "-a", str(RECIPE / "overlay-ignition") + "/.", str(tree))
    (tree / "etc/sudoers.d/refos-core").chmod(0o440)
    install_debs(tree, debs, variant["remove"])
    # "uninitialized" makes the first boot a systemd first boot (machine-id(5), "First
    # Boot Semantics"; an empty file does not): only then does systemd apply presets,
    # which is how Ignition enables units (/etc/systemd/system-preset/20-ignition.preset).
    (tree / "etc/machine-id").write_text("uninitialized\n")


def _bootstrap(tree: Path, recipe: dict, out: Path) -> None:
    """The one mmdebstrap run of a build. It also downloads (never installs) the
    packages each variant adds (recipe `[ignition]`, `[ostree]`, `[snap]`) into
    `out`/VARIANT-debs, so the variants need no second bootstrap and no package lists."""
    hooks = []
    for variant in VARIANTS:
        cache = f"/var/cache/refos-{variant}-debs"
        download = (f"mkdir -p {cache}/partial && apt-get install -y -q --download-only "
                    f"--no-install-recommends -o Dir::Cache::archives={cache} "
                    + " ".join(recipe[variant]["add"]) + f" && rm -rf {cache}/partial")
        (out / f"{variant}-debs").mkdir()
        hooks += [f"--customize-hook=chroot \"$1\" sh -c '{download}'",
                  f"--customize-hook=sync-out {cache} {out / f'{variant}-debs'}"]
    customize = " && ".join(
        [
            "rm -f /etc/ssh/ssh_host_*",
            ": > /etc/machine-id",
            "echo refos > /etc/hostname",
            "mkdir -p /efi /state /var/lib/docker",
            "systemctl enable " + " ".join(recipe["enable"]),
            "systemctl mask " + " ".join(recipe["mask"]),
            "update-initramfs -u -k all",
            "rm -rf /var/cache/refos-*-debs",
            "apt-get clean",
            "rm -rf /var/lib/apt/lists/*",
        ]
    )
    run(
        "mmdebstrap",
        f"--variant={recipe['variant']}",
        "--include=" + ",".join(recipe["packages"]),
        "--components=main",
        "--customize-hook=sync-in " + str(RECIPE / "overlay") + " /",
        *hooks,
        f"--customize-hook=chroot \"$1\" sh -c '{customize}'",
        recipe["suite"],
        str(tree),
    )


def _payload(out: Path, tree: Path, name: str, version: str, build_id: str,
             boot: tuple[Path, Path]) -> None:
    work = out / "payload-work"
    work.mkdir()
    squashfs(tree, work / "rootfs.squashfs")
    shutil.copy(boot[0], work / "vmlinuz")
    shutil.copy(boot[1], work / "initrd.img")
    (work / "manifest").write_text(f"VERSION={version}\nBUILD_ID={build_id}\n")
    members = ["vmlinuz", "initrd.img", "rootfs.squashfs"]
    sums = "".join(f"{_sha256(work / m)}  {m}\n" for m in members)
    (work / "SHA256SUMS").write_text(sums)
    with tarfile.open(out / name, "w", format=tarfile.GNU_FORMAT) as tar:
        for m in ["manifest", "SHA256SUMS", *members]:
            tar.add(work / m, arcname=m)
    shutil.rmtree(work)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()
