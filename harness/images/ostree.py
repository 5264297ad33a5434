"""Build refos-ostree: the refos tree as an OSTree deployment (twin of Fedora CoreOS's
and Atomic Host's root), booted by GRUB from OSTree's own boot entries.

Called by build.py with a copy of the bootstrapped refos tree. The steps follow
OSTree's documented layout (docs/adapting-existing.md at v2022.7): /etc moves to
/usr/etc, /var is empty in the commit, /home and /root live under /var; the commit
goes into the repo of a physical sysroot made by `ostree admin init-fs`, `os-init`
and `deploy`. Every step runs on files: no loop devices, no mounts.

Why GRUB on an ext4 /boot: `ostree admin deploy` swaps /boot/loader, a symlink, to
switch deployments atomically; FAT has none, so systemd-boot on the ESP cannot follow
it, and OVMF reads only FAT. GRUB reads ext4 and follows the symlink. Debian's GRUB
has no `blscfg` (a Fedora patch), so libostree's grub2 backend writes the menu: it
finds /boot/grub/grub.cfg, a symlink to ../loader/grub.cfg, and runs grub-mkconfig,
whose /etc/grub.d/15_ostree turns the boot entries into menu entries
(src/libostree/ostree-bootloader-grub2.c, src/boot/grub2/grub2-15_ostree at v2022.7).
"""

import shutil
import subprocess
import uuid
from pathlib import Path

from harness.images.steps import (
    ESP_TYPE,
    LINUX_TYPE,
    RECIPE,
    BuildError,
    Partition,
    esp_image,
    ext4_at,
    gpt_disk,
    install_debs,
    one,
    qcow2,
    remove_tree,
    run,
    set_release,
)
from harness.log import step

OSNAME = "refos"
REF = "refos/x86_64/stable"
# The Discoverable Partitions Specification's x86-64 root type, as ostree-boot's
# README.Debian asks for.
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
# Kept under /var, which every deployment shares (docs/adapting-existing.md).
TO_VAR = {"home": "home", "root": "roothome", "srv": "srv", "mnt": "mnt", "opt": "opt"}


def build_disk(out: Path, tree: Path, variant: dict, version: str, build_id: str) -> None:
    """refos-ostree.qcow2 in `out`, from `tree` (consumed)."""
    with step("refos-ostree: dracut with ostree-boot, GRUB", "image"):
        _prepare_tree(tree, out / "ostree-debs", variant, version, build_id)
    work = out / "ostree-work"
    work.mkdir()
    esp_efi = work / "BOOTX64.EFI"
    _grub_efi(tree, esp_efi)
    var, sysroot = work / "var", work / "sysroot"
    boot_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"refos-ostree-boot-{build_id}"))
    try:
        with step("refos-ostree: OSTree layout, commit, deploy", "image"):
            _ostree_layout(tree, var)
            _deploy(tree, sysroot, var, variant["kargs"], version, boot_uuid)
        remove_tree(tree)
        with step(f"disk refos-ostree.qcow2 (version {version})", "image"):
            _disk(work, sysroot, esp_efi, variant["disk"], boot_uuid,
                  out / "refos-ostree.qcow2")
    finally:
        _mutable(sysroot)
    remove_tree(work)


def _mutable(sysroot: Path) -> None:
    """`ostree admin deploy` makes each deployment's root immutable (chattr +i), so that
    nothing is written into / by mistake; lift it here, or the build's scratch cannot be
    removed."""
    deployments = sorted(sysroot.glob("ostree/deploy/*/deploy/*.[0-9]*"))
    dirs = [str(d) for d in deployments if d.is_dir() and not d.is_symlink()]
    if dirs:
        run("chattr", "-i", *dirs)


def _prepare_tree(tree: Path, debs: Path, variant: dict, version: str,
                  build_id: str) -> None:
    """Packages in, refos's A/B machinery out, the GRUB scripts OSTree needs on."""
    run("cp", "-a", str(RECIPE / "overlay-ostree") + "/.", str(tree))
    install_debs(tree, debs, variant["remove"])
    shutil.rmtree(debs)
    # The A/B slot tools and boot assessment do not apply: OSTree deploys instead.
    run("chroot", str(tree), "systemctl", "disable", "refos-health.service",
        stderr=subprocess.DEVNULL)
    for name in ("refos-update", "refos-rollback", "refos-status"):
        (tree / "usr/sbin" / name).unlink()
    shutil.rmtree(tree / "usr/lib/refos")
    (tree / "etc/systemd/system/refos-health.service").unlink()
    # grub-mkconfig runs every executable script in /etc/grub.d: keep the header and
    # OSTree's generator; 10_linux and the others would list files OSTree manages.
    for script in (tree / "etc/grub.d").iterdir():
        if script.name not in ("00_header", "15_ostree"):
            script.chmod(0o644)
    set_release(tree, version, build_id, "ostree")


def _grub_efi(tree: Path, dest: Path) -> None:
    """A standalone GRUB (every module in its memdisk) with the early config embedded."""
    run("chroot", str(tree), "grub-mkstandalone", "-O", "x86_64-efi",
        "-o", "/tmp/BOOTX64.EFI", "--locales=", "--fonts=", "--themes=",
        "boot/grub/grub.cfg=/usr/lib/refos-ostree/grub-early.cfg")
    shutil.move(tree / "tmp/BOOTX64.EFI", dest)


def _ostree_layout(tree: Path, var: Path) -> None:
    """Rearrange the tree as OSTree commits it; the tree's /var moves to `var`, which
    becomes the stateroot's shared /var (so the first boot finds dpkg's and Docker's
    directories as refos does)."""
    kernel = one(tree / "boot", "vmlinuz-*")
    kver = kernel.name.removeprefix("vmlinuz-")
    modules = tree / "usr/lib/modules" / kver
    shutil.move(kernel, modules / "vmlinuz")
    shutil.move(one(tree / "boot", "initrd.img-*"), modules / "initramfs.img")
    _clear(tree / "boot")
    shutil.move(tree / "etc", tree / "usr/etc")
    shutil.move(tree / "var", var)
    (tree / "var").mkdir()
    for name, target in TO_VAR.items():
        path = tree / name
        if path.is_dir() and not path.is_symlink():
            shutil.move(path, var / target)
        else:
            (var / target).mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(f"var/{target}")
    for name in ("dev", "proc", "sys", "run", "tmp", "efi", "state"):
        _clear(tree / name)
    for name in ("efi", "state"):
        (tree / name).rmdir()
    (tree / "sysroot").mkdir()
    (tree / "ostree").symlink_to("sysroot/ostree")


def _clear(directory: Path) -> None:
    """Empty a directory of the tree (device nodes and the like cannot be committed)."""
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            remove_tree(child)
        else:
            child.unlink()


def _ostree(*args: str) -> None:
    run("ostree", *args, stdout=subprocess.DEVNULL)


def _deploy(tree: Path, sysroot: Path, var: Path, kargs: list[str], version: str,
            boot_uuid: str) -> None:
    """init-fs, os-init, commit, deploy; then the first GRUB menu, as 15_ostree writes it."""
    repo = f"--repo={sysroot}/ostree/repo"
    sysroot.mkdir()
    _ostree("admin", "init-fs", str(sysroot))
    # No boot loader while deploying here: grub-mkconfig needs the real disk. The
    # first menu is written below by OSTree's own generator instead.
    _ostree("config", repo, "set", "sysroot.bootloader", "none")
    _ostree("admin", "os-init", f"--sysroot={sysroot}", OSNAME)
    _ostree("commit", repo, f"--branch={REF}", f"--subject=refos {version}",
            f"--add-metadata-string=version={version}", f"--tree=dir={tree}")
    _ostree("admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}",
            *(f"--karg={k}" for k in kargs), REF)
    stateroot_var = sysroot / "ostree/deploy" / OSNAME / "var"
    remove_tree(stateroot_var)
    shutil.move(var, stateroot_var)
    # From now on `ostree admin deploy` in the guest runs grub-mkconfig; /sysroot is
    # mounted read-only by ostree-prepare-root.
    _ostree("config", repo, "set", "sysroot.bootloader", "grub2")
    _ostree("config", repo, "set", "sysroot.readonly", "true")
    _grub_menu(sysroot, boot_uuid)


def _grub_menu(sysroot: Path, boot_uuid: str) -> None:
    """/boot/loader/grub.cfg: a header like 00_header's and the entries of
    `ostree admin instutil grub2-generate`, the command 15_ostree runs."""
    boot = sysroot / "boot"
    loader = boot / "loader"
    bootversion = loader.readlink().name.removeprefix("loader.")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GRUB2_BOOT_DEVICE_ID": boot_uuid,
           "GRUB2_PREPARE_ROOT_CACHE": f"search --no-floppy --fs-uuid --set=root {boot_uuid}"}
    entries = run("ostree", "admin", "instutil", "grub2-generate", f"--sysroot={sysroot}",
                  bootversion, env=env, capture_output=True, text=True).stdout
    if "menuentry" not in entries:
        raise BuildError(f"ostree admin instutil grub2-generate wrote no menu entry:\n{entries}")
    # The entries call load_video, which 00_header defines.
    header = "set default=0\nset timeout=1\nfunction load_video {\n  insmod all_video\n}\n"
    (loader / "grub.cfg").write_text(header + entries)
    (boot / "grub").mkdir()
    (boot / "grub/grub.cfg").symlink_to("../loader/grub.cfg")


def _disk(work: Path, sysroot: Path, esp_efi: Path, sizes: dict, boot_uuid: str,
          dest: Path) -> None:
    """GPT: ESP (GRUB), boot (ext4, OSTree's /boot), root (ext4, the physical sysroot).
    The ext4 file systems are made in place from directories (mke2fs -d keeps the
    repo's hard links)."""
    boot = work / "boot"
    shutil.move(sysroot / "boot", boot)
    (sysroot / "boot").mkdir()
    esp = work / "esp.img"
    esp_image(esp, sizes["esp"], {"EFI/BOOT/BOOTX64.EFI": esp_efi})
    raw = work / "disk.raw"
    offsets = gpt_disk(raw, [Partition("ESP", ESP_TYPE, sizes["esp"], esp),
                             Partition("boot", LINUX_TYPE, sizes["boot"]),
                             Partition("root", ROOT_TYPE, sizes["root"])])
    ext4_at(raw, offsets[1], sizes["boot"], "boot", boot, ("-U", boot_uuid))
    ext4_at(raw, offsets[2], sizes["root"], "root", sysroot)
    qcow2(raw, dest)
