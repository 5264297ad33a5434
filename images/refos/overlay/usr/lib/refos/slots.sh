# Shared by refos-update, refos-rollback and refos-status (sourced, not run).
# Boot entries live on the ESP as refos-<slot>[+LEFT[-DONE]].conf; systemd-boot
# sorts entries of one sort-key by "version" (highest first) and puts entries
# with no tries left last. The "version" line is therefore a generation number:
# whoever should boot next gets the highest one.
ESP=/efi
ENTRIES=$ESP/loader/entries

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

current_slot() {
	sed -n 's/.*refos\.slot=\([ab]\).*/\1/p' /proc/cmdline
}

other_slot() {
	case "$1" in a) echo b ;; b) echo a ;; *) die "cannot tell the booted slot from /proc/cmdline" ;; esac
}

# entry_file SLOT: the slot's entry file, whatever its counter.
entry_file() {
	for f in "$ENTRIES"/refos-"$1".conf "$ENTRIES"/refos-"$1"+*.conf; do
		if [ -e "$f" ]; then echo "$f"; return 0; fi
	done
}

next_generation() {
	max=0
	for f in "$ENTRIES"/refos-*.conf; do
		[ -e "$f" ] || continue
		g=$(sed -n 's/^version[[:space:]]\+//p' "$f")
		if [ "${g:-0}" -gt "$max" ]; then max=$g; fi
	done
	echo $((max + 1))
}

# write_entry SLOT VERSION GENERATION SUFFIX: SUFFIX is "" (known good) or "+N" (N tries).
write_entry() {
	slot=$1 version=$2 gen=$3 suffix=$4
	rm -f "$ENTRIES"/refos-"$slot".conf "$ENTRIES"/refos-"$slot"+*.conf
	tmp=$ENTRIES/.refos-$slot.tmp
	cat > "$tmp" <<ENTRY
title refos $version (slot $(echo "$slot" | tr ab AB))
sort-key refos
version $gen
linux /refos/$slot/vmlinuz
initrd /refos/$slot/initrd.img
options root=PARTLABEL=ROOT-$(echo "$slot" | tr ab AB) rootfstype=squashfs ro console=ttyS0,115200 refos.slot=$slot refos.version=$version
ENTRY
	mv "$tmp" "$ENTRIES/refos-$slot$suffix.conf"
	sync
}

entry_version() {
	sed -n 's/.*refos\.version=\([^ ]*\).*/\1/p' "$1"
}
