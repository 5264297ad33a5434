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
        gpgv gpg gpg-agent

.PHONY: run test deps venv services image bench lint clean

run: deps venv services image
	$(VENV)/bin/harness run

# The fast tests first. Then the VM tests as two pytest processes side by side, one per
# core: refos (the driver, the suites, the bug cases, the matrix path) here, and beside
# it refos-ignition (its suites and Ignition's own tests) then refos-snap (the suites,
# Docker as a snap), their output in artifacts/test-<distro>.log and their summaries
# shown at the end. All must pass.
IGNITION := $(wildcard tests/harness/test_ignition.py)
SIDE_LOGS := artifacts/test-refos-ignition.log artifacts/test-refos-snap.log
test: deps venv services image
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest tests/unit tests/hostile --offline
	@mkdir -p artifacts; rm -f $(SIDE_LOGS); \
	( rc=0; \
	  if [ -n "$(IGNITION)" ]; then \
	    $(VENV)/bin/pytest tests/suites $(IGNITION) --distro=refos-ignition --offline \
	      -p no:cacheprovider > artifacts/test-refos-ignition.log 2>&1 || rc=1; \
	  fi; \
	  $(VENV)/bin/pytest tests/suites --distro=refos-snap --offline \
	    -p no:cacheprovider > artifacts/test-refos-snap.log 2>&1 || rc=1; \
	  exit $$rc ) & side=$$!; \
	$(VENV)/bin/pytest tests/harness tests/suites tests/bugs --offline \
	  $(if $(IGNITION),--ignore=$(IGNITION)); main=$$?; \
	wait $$side; other=$$?; \
	for log in $(SIDE_LOGS); do \
	  [ ! -f $$log ] || { echo "== $$log (full log there)"; tail -n 30 $$log; }; \
	done; \
	exit $$(( main || other ))

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
