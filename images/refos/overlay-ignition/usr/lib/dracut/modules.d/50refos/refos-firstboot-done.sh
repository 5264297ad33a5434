#!/bin/sh
# The systemd-boot counterpart of Fedora CoreOS's /boot/ignition.firstboot
# stamp: systemd-boot cannot test for a file, so the image ships a loader entry
# of its own, refos-firstboot.conf, that adds `ignition.firstboot
# ignition.platform.id=qemu` and sorts first. Removing it leaves the slot's
# ordinary entry, so no later boot runs Ignition.
set -e
esp=/run/refos-esp
entry=loader/entries/refos-firstboot.conf
mkdir -p $esp
mount -t vfat -o rw /dev/disk/by-partlabel/ESP $esp
rm -f "$esp/$entry"
sync
umount $esp
echo "refos: first boot complete: removed $entry from the ESP; later boots run no Ignition"
