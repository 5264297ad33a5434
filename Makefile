# Two commands for users: `make run` (boot refos, run the suites) and `make test`
# (the project's own tests). Both set up everything they need, once.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev \
        pkg-config ovmf mmdebstrap dosfstools mtools fdisk e2fsprogs squashfs-tools \
        busybox-static cloud-init ignition xorriso zstd xz-utils bzip2 curl \
        openssh-client python3-venv chromium libxml2-utils cgpt openssh-server \
        gpgv gpg gpg-agent ostree gcc python3-dev procps vde2

.PHONY: run test deps venv services image bench lint clean

run: deps venv services image
	$(VENV)/bin/harness run

# The fast tests first, then the VM tests: pytest processes per stream (refos's driver
# tests; refos; the twins refos-snap, refos-ostree and refos-ignition, each on its own
# mechanism), one per core at a time (tools/teststreams.py; each log in
# artifacts/test-<stream>.log). All must pass.
test: deps venv services image
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest tests/unit tests/hostile --offline
	$(PY) -m tools.teststreams

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)
$(STAMP): pyproject.toml | deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

# The machine has no systemd: start libvirt's daemons by hand when they are not running.
# /dev/kvm gets the group Debian's udev rule gives it: libvirt checks it as the
# QEMU user and, when it cannot open it, probes QEMU again (about a minute) for
# every domain it starts.
services: deps
	@[ ! -e /dev/kvm ] || [ "$$(stat -c %G /dev/kvm)" = kvm ] || { chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; }
	@pgrep -x virtlogd >/dev/null || { echo "starting virtlogd"; virtlogd -d; }
	@pgrep -x libvirtd >/dev/null || { echo "starting libvirtd"; libvirtd -d; }
	@for i in $$(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; sleep 0.2; done; \
	  echo "libvirtd does not answer on qemu:///system"; exit 1

image: venv
	$(VENV)/bin/harness build

bench: deps venv services image
	$(VENV)/bin/python -m tools.bench

lint: venv
	$(VENV)/bin/ruff check .

clean: venv
	$(VENV)/bin/harness clean
