"""Build refos from Debian packages: a UEFI GPT disk (ESP, ROOT-A, ROOT-B, STATE)
and the update payloads that refos-update installs.

No loop devices: every filesystem is made in a plain file (mksquashfs, mkfs.vfat
plus mtools, mke2fs) and copied into the disk file at its partition's offset.
Results are cached under a hash of the recipe directory and this module, so a
build is skipped when nothing changed; a build runs in a scratch directory and
is renamed into place only when complete.
"""

import fcntl
import hashlib
import json
import shlex
import shutil
import subprocess
import tarfile
import time
import tomllib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from harness.log import log, step
from harness.paths import REPO, cache_dir

RECIPE = REPO / "images" / "refos"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIB = 1024 * 1024


class BuildError(RuntimeError):
    pass

# The variants built from copies of refos's tree (recipe tables of those names).
VARIANTS = ("ignition", "ostree", "snap")


@dataclass(frozen=True)
class Artifacts:
    """What one refos build produced; every path is inside the cache."""

    root: Path
    # The bootable disks a build makes: the names catalog entries give as `image.build`.
    DISKS = ("disk", "noapparmor_disk", "ignition_disk", "ostree_disk", "snap_disk")

    @property
    def disk(self) -> Path:
        return self.root / "refos.qcow2"

    @property
    def noapparmor_disk(self) -> Path:
        return self.root / "refos-noapparmor.qcow2"

    @property
    def ignition_disk(self) -> Path:
        return self.root / "refos-ignition.qcow2"

    @property
    def ostree_disk(self) -> Path:
        return self.root / "refos-ostree.qcow2"

    @property
    def snap_disk(self) -> Path:
        return self.root / "refos-snap.qcow2"

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
    """Hash of every recipe file (name, mode, bytes) and of this builder and its variants'."""
    h = hashlib.sha256()
    files = sorted(p for p in RECIPE.rglob("*") if p.is_file())
    builders = [Path(__file__).with_name(f"{v}.py") for v in ("build", "ostree", "snap")]
    for p in [*files, *builders]:
        h.update(str(p.relative_to(REPO)).encode() + b"\0")
        h.update(oct(p.stat().st_mode & 0o777).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def load_recipe() -> dict:
    return tomllib.loads((RECIPE / "recipe.toml").read_text())


def artifacts() -> Artifacts:
    """Where the current recipe's build lives (built or not)."""
    return Artifacts(cache_dir() / "images" / f"refos-{recipe_hash()}")


def build(force: bool = False) -> Artifacts:
    """Build refos unless the cache already has this recipe's result."""
    out = artifacts()
    out.root.parent.mkdir(parents=True, exist_ok=True)
    with open(out.root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out.root / "build.json").exists() and not force:
            log.info("refos: cached build %s", out.root)
            return out
        scratch = out.root.with_name(out.root.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            with step(f"build refos {out.root.name}", "image"):
                _build_into(scratch, load_recipe(), out.root.name.split("-", 1)[1])
            shutil.rmtree(out.root, ignore_errors=True)
            scratch.rename(out.root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} is missing: run `make deps` to install the build tools") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"`{' '.join(cmd[:3])} ...` failed with status {e.returncode}") from e


def _build_into(out: Path, recipe: dict, build_id: str) -> None:
    started = time.monotonic()
    from harness.images import snap  # it builds on this module's helpers

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
    from harness.images import ostree, snap  # they build on this module's helpers

    tree = out / "tree"
    with step("mmdebstrap rootfs (Debian packages)", "image"):
        _bootstrap(tree, recipe, out)
    shutil.copy(_one(tree / "boot", "vmlinuz-*"), out / "vmlinuz")
    shutil.copy(_one(tree / "boot", "initrd.img-*"), out / "initrd.img")
    versions = recipe["versions"]
    boot = (out / "vmlinuz", out / "initrd.img")
    _payloads(out, tree, versions, build_id, "payload", boot)
    _set_release(tree, versions["base"], build_id, "default")
    with step(f"disk refos.qcow2 (version {versions['base']})", "image"):
        _disk(out, tree, "refos", recipe["disk"], versions["base"], boot)
    ignition, ostree_tree, snap_tree = (out / f"tree-{v}" for v in VARIANTS)
    with step("copy the tree for refos-ignition, refos-ostree and refos-snap", "image"):
        for copy in (ignition, ostree_tree, snap_tree):
            _run("cp", "-a", "--reflink=auto", str(tree), str(copy))
    _run("chroot", str(tree), "dpkg", "--purge", "apparmor", stdout=subprocess.DEVNULL)
    _set_release(tree, versions["base"], build_id, "noapparmor")
    with step(f"disk refos-noapparmor.qcow2 (version {versions['base']})", "image"):
        _disk(out, tree, "refos-noapparmor", recipe["disk"], versions["base"], boot)
    _remove_tree(tree)
    with step("refos-ignition: dracut and Ignition in, cloud-init out", "image"):
        _ignition_tree(ignition, out / "ignition-debs", recipe["ignition"])
    shutil.copy(_one(ignition / "boot", "initrd.img-*"), out / "initrd-ignition.img")
    boot = (out / "vmlinuz", out / "initrd-ignition.img")
    _payloads(out, ignition, versions, build_id, "payload-ignition", boot)
    _set_release(ignition, versions["base"], build_id, "ignition")
    with step(f"disk refos-ignition.qcow2 (version {versions['base']})", "image"):
        _disk(out, ignition, "refos-ignition", recipe["disk"], versions["base"], boot,
              recipe["ignition"]["firstboot_args"])
    _remove_tree(ignition)
    shutil.rmtree(out / "ignition-debs")
    ostree.build_disk(out, ostree_tree, recipe["ostree"], versions["base"], build_id)
    snap.build_disk(out, snap_tree, recipe, build_id, (out / "vmlinuz", out / "initrd.img"),
                    base)


def _remove_tree(tree: Path) -> None:
    """`rm -rf`: about twice as fast as shutil.rmtree on a 30,000-file tree here."""
    _run("rm", "-rf", "--one-file-system", str(tree))


def _payloads(out: Path, tree: Path, versions: dict, build_id: str, prefix: str,
              boot: tuple[Path, Path]) -> None:
    for kind in ("update", "broken"):
        _set_release(tree, versions[kind], build_id, kind)
        with step(f"{prefix} {kind} (version {versions[kind]})", "image"):
            _payload(out, tree, f"{prefix}-{kind}.tar", versions[kind], build_id, boot)


def _ignition_tree(tree: Path, debs: Path, variant: dict) -> None:
    """Turn a copy of the refos tree into refos-ignition, offline: the packages were
    downloaded by the bootstrap; installing dracut runs it for the kernel."""
    _run("cp", "-a", str(RECIPE / "overlay-ignition") + "/.", str(tree))
    (tree / "etc/sudoers.d/refos-core").chmod(0o440)
    install_debs(tree, debs, variant["remove"])
    # "uninitialized" makes the first boot a systemd first boot (machine-id(5), "First
    # Boot Semantics"; an empty file does not): only then does systemd apply presets,
    # which is how Ignition enables units (/etc/systemd/system-preset/20-ignition.preset).
    (tree / "etc/machine-id").write_text("uninitialized\n")


def install_debs(tree: Path, debs: Path, remove: list[str], autoremove: bool = True) -> None:
    """Install the downloaded packages in `debs` into a copy of the tree, offline, and
    purge `remove` (and, with `autoremove`, what only they needed); installing dracut
    runs it for the kernel."""
    inside = "/var/cache/refos-variant-debs"
    _run("cp", "-a", str(debs), str(tree) + inside)
    _chroot(tree, f"apt-get install -y -q --no-install-recommends --purge {inside}/*.deb "
                  + " ".join(f"{p}-" for p in remove)
                  + (" && apt-get autoremove -y -q --purge" if autoremove else "")
                  + f" && rm -rf {inside}")


def _chroot(tree: Path, script: str) -> None:
    """Run `script` in `tree` in a private mount namespace: /proc, /sys and /dev
    vanish with the process."""
    t = shlex.quote(str(tree))
    mounts = (f"mount -t proc proc {t}/proc && mount -t sysfs sysfs {t}/sys && "
              f"mount --rbind /dev {t}/dev && chroot {t} sh -c {shlex.quote(script)}")
    _run("unshare", "--mount", "--propagation", "private", "sh", "-c", mounts,
         stdout=subprocess.DEVNULL)


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise BuildError(f"expected one {pattern} in {directory}, found {len(found)}")
    return found[0]


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
    _run(
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


def _set_release(tree: Path, version: str, build_id: str, variant: str) -> None:
    """/usr/lib/os-release says which refos this slot is; `broken` also never gets healthy."""
    (tree / "usr/lib/os-release").write_text(
        f'PRETTY_NAME="refos {version} ({variant}, Debian based)"\n'
        "NAME=refos\nID=refos\nID_LIKE=debian\n"
        f'VERSION="{version}"\nVERSION_ID={version}\n'
        f"IMAGE_ID=refos\nIMAGE_VERSION={version}\nBUILD_ID={build_id}\n"
        f"VARIANT_ID={variant}\n"
    )
    marker = tree / "usr/lib/refos/unhealthy"
    if variant == "broken":
        marker.touch()
    else:
        marker.unlink(missing_ok=True)


def _squashfs(tree: Path, dest: Path) -> None:
    # zstd at level 3 instead of the default 15: the build is bound by compression time.
    _run("mksquashfs", str(tree), str(dest), "-comp", "zstd", "-Xcompression-level", "3",
         "-noappend", "-quiet",
         "-wildcards", "-e", "boot/*", stdout=subprocess.DEVNULL)


def _payload(out: Path, tree: Path, name: str, version: str, build_id: str,
             boot: tuple[Path, Path]) -> None:
    work = out / "payload-work"
    work.mkdir()
    _squashfs(tree, work / "rootfs.squashfs")
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


def _disk(out: Path, tree: Path, name: str, sizes: dict, version: str,
          boot: tuple[Path, Path], firstboot_args: str = "") -> None:
    work = out / f"{name}-work"
    work.mkdir()
    _squashfs(tree, work / "root.squashfs")
    if (work / "root.squashfs").stat().st_size > sizes["root"] * MIB:
        raise BuildError(f"root filesystem does not fit ROOT-A ({sizes['root']} MiB): "
                         "grow [disk] root in images/refos/recipe.toml")
    _esp(work / "esp.img", tree, boot, sizes["esp"], version, firstboot_args)
    parts = [
        ("ESP", ESP_TYPE, sizes["esp"], work / "esp.img"),
        ("ROOT-A", LINUX_TYPE, sizes["root"], work / "root.squashfs"),
        ("ROOT-B", LINUX_TYPE, sizes["root"], None),
        ("STATE", LINUX_TYPE, sizes["state"], None),
    ]
    raw = work / "disk.raw"
    # 1 MiB before the first partition, 1 MiB for the backup GPT.
    total = 1 + sum(p[2] for p in parts) + 1
    with open(raw, "wb") as f:
        f.truncate(total * MIB)
    script = "label: gpt\nunit: sectors\n" + "".join(
        f'size={size * 2048}, type={ptype}, name="{label}"\n' for label, ptype, size, _ in parts
    )
    _run("sfdisk", "--quiet", str(raw), input=script.encode())
    offset = 1
    for _label, _type, size, content in parts:
        if content is not None:
            _run("dd", f"if={content}", f"of={raw}", "bs=1M", f"seek={offset}",
                 "conv=notrunc,sparse", "status=none")
        offset += size
    # STATE is made in place: writing an empty 4 GiB file through dd costs a minute.
    state_offset = (offset - sizes["state"]) * MIB
    _run("mke2fs", "-q", "-t", "ext4", "-L", "STATE", "-F", "-E", f"offset={state_offset}",
         str(raw), f"{sizes['state']}M")
    _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(out / f"{name}.qcow2"))
    shutil.rmtree(work)


def _esp(dest: Path, tree: Path, boot: tuple[Path, Path], size_mib: int, version: str,
         firstboot_args: str = "") -> None:
    """systemd-boot as the removable-media loader, one known-good entry for slot A.

    The entry is written by the image's own slots.sh, so the first entry and the
    ones refos-update writes later cannot drift apart. With `firstboot_args`
    (refos-ignition) a second entry, refos-firstboot.conf, boots slot A with them
    and sorts first (a higher version), until the initramfs removes it."""
    entries = tree / "run/refos-esp/loader/entries"
    entries.mkdir(parents=True)
    script = (". /usr/lib/refos/slots.sh; ENTRIES=/run/refos-esp/loader/entries; "
              f'write_entry a {version} 1 ""')
    _run("chroot", str(tree), "bash", "-c", script)
    entry = _one(entries, "refos-a*.conf")
    if firstboot_args:
        _firstboot_entry(entry, entries / "refos-firstboot.conf", firstboot_args)
    loader_conf = tree / "run/refos-esp/loader/loader.conf"
    loader_conf.write_text("timeout 0\neditor no\nauto-entries no\nauto-firmware no\n")
    _run("mkfs.vfat", "-F", "32", "-n", "ESP", "-C", str(dest), str(size_mib * 1024),
         stdout=subprocess.DEVNULL)
    img = ["-i", str(dest)]
    _run("mmd", *img, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries", "::/refos",
         "::/refos/a", "::/refos/b")
    _run("mcopy", *img, str(tree / "usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
         "::/EFI/BOOT/BOOTX64.EFI")
    _run("mcopy", *img, str(loader_conf), "::/loader/loader.conf")
    _run("mcopy", *img, *sorted(str(p) for p in entries.glob("*.conf")), "::/loader/entries/")
    _run("mcopy", *img, str(boot[0]), "::/refos/a/vmlinuz")
    _run("mcopy", *img, str(boot[1]), "::/refos/a/initrd.img")
    shutil.rmtree(tree / "run/refos-esp")


def _firstboot_entry(entry: Path, dest: Path, args: str) -> None:
    """Slot A's entry with `args` added, a title that says so, and a version above it."""
    lines = []
    for line in entry.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "title":
            value += " (first boot)"
        elif key == "version":
            value = str(int(value) + 1)
        elif key == "options":
            value += " " + args
        lines.append(f"{key} {value}")
    dest.write_text("\n".join(lines) + "\n")
