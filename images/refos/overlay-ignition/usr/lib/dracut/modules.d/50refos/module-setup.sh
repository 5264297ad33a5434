#!/bin/bash
# refos in a dracut initramfs (refos-ignition). Lays STATE's /etc, /var and
# homes over the read-only slot before Ignition's mount and files stages write
# through /sysroot, and ends the first boot once Ignition has applied its config.

check() {
    return 0
}

depends() {
    echo systemd ignition
}

installkernel() {
    hostonly='' instmods squashfs overlay ext4 vfat nls_cp437 nls_iso8859_1 nls_utf8
}

install() {
    inst_multiple e2fsck mount umount mkdir chmod rm sync
    inst_script /usr/lib/refos/state-mount /usr/lib/refos/state-mount
    inst_script "$moddir/refos-firstboot-done.sh" /usr/lib/refos/firstboot-done
    inst_simple "$moddir/refos-state.service" "$systemdsystemunitdir/refos-state.service"
    inst_simple "$moddir/refos-firstboot-done.service" \
        "$systemdsystemunitdir/refos-firstboot-done.service"
    mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires" \
        "$initdir$systemdsystemunitdir/ignition-complete.target.requires"
    ln_r "$systemdsystemunitdir/refos-state.service" \
        "$systemdsystemunitdir/initrd-root-fs.target.requires/refos-state.service"
    # ignition-complete.target is queued on first boot only (ignition-generator).
    ln_r "$systemdsystemunitdir/refos-firstboot-done.service" \
        "$systemdsystemunitdir/ignition-complete.target.requires/refos-firstboot-done.service"
    inst_simple "$moddir/ignition-remount-sysroot.conf" \
        "$systemdsystemconfdir/ignition-remount-sysroot.service.d/10-refos.conf"
    inst_simple "$moddir/journald-console.conf" \
        "$systemdutilconfdir/journald.conf.d/10-refos-console.conf"
    inst_simple "$moddir/base.ign" /usr/lib/ignition/base.d/10-refos-core.ign
}
