"""The steps every refos disk is made of, shared by refos's build (build.py) and
its variants (ostree.py, snap.py), which import only this module.

No loop devices, no mounts: a file system is made in a plain file (mksquashfs;
mkfs.vfat with mtools) and copied into the disk file at its partition's offset, or
made in place there (mke2fs -E offset).
"""

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.paths import REPO

RECIPE = REPO / "images" / "refos"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIB = 1024 * 1024


class BuildError(RuntimeError):
    pass


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    """Run a build tool; a missing tool or a failure is a BuildError that says which."""
    try:
        return subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} is missing: run `make deps` to install the build tools") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"`{' '.join(cmd[:3])} ...` failed with status {e.returncode}") from e


def one(directory: Path, pattern: str) -> Path:
    """The one file in `directory` matching `pattern`; BuildError if none or several."""
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise BuildError(f"expected one {pattern} in {directory}, found {len(found)}")
    return found[0]


def remove_tree(tree: Path) -> None:
    """`rm -rf`: about twice as fast as shutil.rmtree on a 30,000-file tree here."""
    run("rm", "-rf", "--one-file-system", str(tree))


def chroot(tree: Path, script: str) -> None:
    """Run `script` in `tree` in a private mount namespace: /proc, /sys and /dev
    vanish with the process."""
    t = shlex.quote(str(tree))
    mounts = (f"mount -t proc proc {t}/proc && mount -t sysfs sysfs {t}/sys && "
              f"mount --rbind /dev {t}/dev && chroot {t} sh -c {shlex.quote(script)}")
    run("unshare", "--mount", "--propagation", "private", "sh", "-c", mounts,
        stdout=subprocess.DEVNULL)


def install_debs(tree: Path, debs: Path, remove: list[str], autoremove: bool = True) -> None:
    """Install the downloaded packages in `debs` into a copy of the tree, offline, and
    purge `remove` (and, with `autoremove`, what only they needed); installing dracut
    runs it for the kernel."""
    inside = "/var/cache/refos-variant-debs"
    run("cp", "-a", str(debs), str(tree) + inside)
    chroot(tree, f"apt-get install -y -q --no-install-recommends --purge {inside}/*.deb "
                 + " ".join(f"{p}-" for p in remove)
                 + (" && apt-get autoremove -y -q --purge" if autoremove else "")
                 + f" && rm -rf {inside}")


def set_release(tree: Path, version: str, build_id: str, variant: str) -> None:
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


def squashfs(tree: Path, dest: Path) -> None:
    # zstd at level 3 instead of the default 15: the build is bound by compression time.
    run("mksquashfs", str(tree), str(dest), "-comp", "zstd", "-Xcompression-level", "3",
        "-noappend", "-quiet",
        "-wildcards", "-e", "boot/*", stdout=subprocess.DEVNULL)


# -- disks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    label: str
    type: str  # GPT partition type GUID
    size_mib: int
    content: Path | None = None  # a file system image copied in; None: left as it is


def gpt_disk(raw: Path, parts: list[Partition]) -> list[int]:
    """A raw disk file holding `parts` in a GPT, each one's content copied to its
    offset; the offset of each partition in MiB (for file systems made in place).
    1 MiB before the first partition, 1 MiB after the last for the backup GPT."""
    with open(raw, "wb") as f:
        f.truncate((1 + sum(p.size_mib for p in parts) + 1) * MIB)
    script = "label: gpt\nunit: sectors\n" + "".join(
        f'size={p.size_mib * 2048}, type={p.type}, name="{p.label}"\n' for p in parts)
    run("sfdisk", "--quiet", str(raw), input=script.encode())
    offsets, offset = [], 1
    for p in parts:
        if p.content is not None:
            run("dd", f"if={p.content}", f"of={raw}", "bs=1M", f"seek={offset}",
                "conv=notrunc,sparse", "status=none")
        offsets.append(offset)
        offset += p.size_mib
    return offsets


def ext4_at(raw: Path, offset_mib: int, size_mib: int, label: str,
            directory: Path | None = None, options: tuple[str, ...] = ()) -> None:
    """An ext4 file system made in place in the disk file, from `directory` when given
    (mke2fs -d keeps hard links): writing an empty 4 GiB file through dd costs a minute."""
    source = ("-d", str(directory)) if directory is not None else ()
    run("mke2fs", "-q", "-t", "ext4", "-L", label, *options, *source, "-F",
        "-E", f"offset={offset_mib * MIB}", str(raw), f"{size_mib}M")


def esp_image(dest: Path, size_mib: int, files: dict[str, Path],
              dirs: tuple[str, ...] = ()) -> None:
    """A FAT32 file system labelled ESP in the file `dest` (mtools, no mount):
    `files` maps a path on it (EFI/BOOT/BOOTX64.EFI) to a local file; `dirs` are
    made too, empty or not."""
    run("mkfs.vfat", "-F", "32", "-n", "ESP", "-C", str(dest), str(size_mib * 1024),
        stdout=subprocess.DEVNULL)
    wanted = set()
    for folder in (*dirs, *(str(Path(f).parent) for f in files)):
        wanted.update(str(p) for p in (Path(folder), *Path(folder).parents) if str(p) != ".")
    img = ["-i", str(dest)]
    run("mmd", *img, *(f"::/{d}" for d in sorted(wanted, key=lambda d: (d.count("/"), d))))
    for path, local in files.items():
        run("mcopy", *img, str(local), f"::/{path}")


def qcow2(raw: Path, dest: Path) -> None:
    run("qemu-img", "convert", "-O", "qcow2", str(raw), str(dest))


# -- refos's A/B disk ----------------------------------------------------------


def ab_disk(out: Path, tree: Path, name: str, sizes: dict, version: str,
            boot: tuple[Path, Path], firstboot_args: str = "") -> None:
    """`name`.qcow2 in `out`: ESP (systemd-boot), ROOT-A (`tree` as squashfs), ROOT-B
    (empty until an update) and STATE (ext4)."""
    work = out / f"{name}-work"
    work.mkdir()
    squashfs(tree, work / "root.squashfs")
    if (work / "root.squashfs").stat().st_size > sizes["root"] * MIB:
        raise BuildError(f"root filesystem does not fit ROOT-A ({sizes['root']} MiB): "
                         "grow [disk] root in images/refos/recipe.toml")
    _esp(work / "esp.img", tree, boot, sizes["esp"], version, firstboot_args)
    raw = work / "disk.raw"
    offsets = gpt_disk(raw, [
        Partition("ESP", ESP_TYPE, sizes["esp"], work / "esp.img"),
        Partition("ROOT-A", LINUX_TYPE, sizes["root"], work / "root.squashfs"),
        Partition("ROOT-B", LINUX_TYPE, sizes["root"]),
        Partition("STATE", LINUX_TYPE, sizes["state"]),
    ])
    ext4_at(raw, offsets[-1], sizes["state"], "STATE")
    qcow2(raw, out / f"{name}.qcow2")
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
    run("chroot", str(tree), "bash", "-c", script)
    entry = one(entries, "refos-a*.conf")
    if firstboot_args:
        _firstboot_entry(entry, entries / "refos-firstboot.conf", firstboot_args)
    loader_conf = tree / "run/refos-esp/loader/loader.conf"
    loader_conf.write_text("timeout 0\neditor no\nauto-entries no\nauto-firmware no\n")
    files = {"EFI/BOOT/BOOTX64.EFI": tree / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
             "loader/loader.conf": loader_conf,
             **{f"loader/entries/{p.name}": p for p in sorted(entries.glob("*.conf"))},
             "refos/a/vmlinuz": boot[0], "refos/a/initrd.img": boot[1]}
    esp_image(dest, size_mib, files, dirs=("loader/entries", "refos/b"))
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
