"""The session: the one place a run of the harness is put together.

A Session owns the libvirt connection, the run (its id, folder and cleanup),
the accelerator, image resolution and the saved machines that fresh ones are
restored from. The pytest plugin, the command line, the bench and the matrix
all go through it, so `--offline`, `--image` and HARNESS_IMAGE_<DISTRO> mean
the same on every path, and an image that cannot be had is said once per
distro, with the way out, however many tests want it.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from harness import catalog, images
from harness.images import LocalImage, fetch
from harness.log import log
from harness.paths import REPO, UnsafeRuntimeDir, replace_file
from harness.vm import accel, remote, runs, savecache, snapshot
from harness.vm.machine import BootFailure, KernelBoot, Machine, MachineSpec

DEFAULT_URI = "qemu:///system"


def libvirt_uri(given: str | None = None) -> str:
    """The libvirt connection of a run, decided here for the CLI, pytest and the tools:
    the one given on the command line, else LIBVIRT_DEFAULT_URI (as virsh reads it),
    else qemu:///system."""
    return given or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


@dataclass(frozen=True)
class Options:
    """How a session runs; the CLI's and pytest's options map onto these."""

    libvirt_uri: str = field(default_factory=libvirt_uri)
    accel: str = "auto"  # auto probes KVM and falls back to TCG
    require_kvm: bool = False
    offline: bool = False  # use cached images only
    # Local image files that replace catalog downloads, by distro (--image).
    images: dict[str, Path] = field(default_factory=dict)
    artifacts: Path = REPO / "artifacts"
    saves: bool = True  # restore fresh machines from saved ones (False: cold boots)
    # Guests reach every network this host reaches (restrict=off): for a user's updates
    # from a vendor's server. Off by default; the project's tests never set it. Machines
    # then boot cold: a save is never shared between an open and a closed network.
    open_network: bool = False


class SessionError(RuntimeError):
    """The session cannot start: libvirt unreachable, or a bad setting."""


class TemplateFailed(BootFailure):
    """The machine spec's template failed to boot earlier in this run: not booted again."""


class Images:
    """Image resolution with the session's options; an unavailable image is
    remembered, so it is reported once and every later request gets the same
    one-line answer."""

    def __init__(self, options: Options, record: bool = False):
        self.options, self.record = options, record
        self._found: dict[str, LocalImage | images.ImageUnavailable] = {}

    def get(self, distro: catalog.Distro) -> LocalImage:
        """The image `distro` boots; ImageUnavailable (said once) when it cannot be had."""
        if distro.name not in self._found:
            try:
                self._found[distro.name] = images.resolve(
                    distro, offline=self.options.offline,
                    image_path=self.options.images.get(distro.name))
                if self.record:
                    self._record(distro, self._found[distro.name])
            except (images.ImageUnavailable, fetch.FetchError) as e:
                found = e if isinstance(e, images.ImageUnavailable) else \
                    images.ImageUnavailable(f"{distro.name}: {e}")
                log.error("%s", found)
                self._found[distro.name] = found
        found = self._found[distro.name]
        if isinstance(found, images.ImageUnavailable):
            raise found
        return found

    def _record(self, distro: catalog.Distro, image: LocalImage) -> None:
        """The concrete image (version, digest, source) is part of the run's record."""
        record = self.options.artifacts / distro.name / "image.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        replace_file(record, json.dumps(image.record(), indent=2) + "\n")


class Session:
    """One run: open with `with Session(options) as s:`; machines with `s.machine()`."""

    def __init__(self, options: Options | None = None):
        self.options = options or Options()
        self.images = Images(self.options, record=True)
        self.conn: libvirt.virConnect | None = None
        self.run: runs.Run | None = None
        self.templates: snapshot.Templates | None = None
        self.machines: list[Machine] = []  # every machine made, templates included
        # Specs whose template boot failed, with why: said once, never booted again.
        self.failed_templates: dict[str, TemplateFailed] = {}
        self._accel = ""
        # A remote hypervisor's SSH, through which its guests are reached (harness.vm.remote).
        self.jump: remote.Jump | None = None

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> "Session":
        """Check settings, connect, sweep what dead runs left, start this run."""
        images.check_settings()
        try:
            hypervisor = remote.parse(self.options.libvirt_uri)
        except remote.RemoteError as e:
            raise SessionError(str(e)) from None
        self.jump = remote.Jump(hypervisor) if hypervisor else None
        if self.jump is not None:
            remote.event_loop()  # console streams (harness.vm.remote.ConsoleStream)
        try:
            self.conn = libvirt.open(self.options.libvirt_uri)
        except libvirt.libvirtError as e:
            raise SessionError(f"cannot connect to libvirt at {self.options.libvirt_uri}: {e}\n"
                               "start the daemons with `make services` "
                               "(virtlogd -d; libvirtd -d)") from None
        try:
            runs.sweep(self.conn)  # what earlier, killed runs left behind
            self.run = runs.Run.start(self.conn)
        except (libvirt.libvirtError, OSError, UnsafeRuntimeDir) as e:
            self.conn.close()
            raise SessionError(f"cannot start a run: {e}") from None
        saves = self.options.saves and not self.options.open_network
        self.templates = snapshot.Templates(
            self.conn, self._save_cache(), self.run) if saves else None
        if self.options.open_network:
            log.warning("harness: --open-network: guests reach every network this host "
                        "reaches (restrict=off); machines boot cold, without saves")
        log.info("harness: run %s (%s)", self.run.id, self.run.dir)
        return self

    def _save_cache(self) -> savecache.SaveCache | None:
        """The warm cache; in a place another user could change it is not used (one
        line says so): machines are then saved for this run only."""
        try:
            return savecache.SaveCache(self.conn)
        except (UnsafeRuntimeDir, OSError) as e:  # OSError: e.g. a root-owned cache folder
            log.warning("saves: the warm cache is not used this run: %s", e)
            return None

    def close(self) -> None:
        """Remove every machine and save of this run; safe to call twice. One failure
        is logged and the rest still go (the final sweep takes what is left)."""
        steps = [m.destroy for m in self.machines]
        if self.templates is not None:
            steps.append(self.templates.close)
        if self.conn is not None and self.run is not None:
            steps.append(lambda: runs.sweep(self.conn, finished=frozenset({self.run.id})))
        for close in steps:
            try:
                close()
            except Exception as e:
                log.warning("harness: cleanup step failed, going on: %s", e)
        if self.jump is not None:
            self.jump.close()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what machines are made of ---------------------------------------------

    def forward_port(self) -> runs.PortLock | remote.RemotePort:
        """A port for a guest's SSH forward, free on the host that runs the guest."""
        return runs.PortLock() if self.jump is None else remote.pick_port(self.jump)

    @property
    def libvirt_uri(self) -> str:
        return self.options.libvirt_uri

    @property
    def open_network(self) -> bool:
        return self.options.open_network

    @property
    def accel(self) -> str:
        """kvm or tcg, decided once (a real KVM probe, harness.vm.accel)."""
        if not self._accel:
            kernel = next((i.kernel for i in self.images._found.values()
                           if isinstance(i, LocalImage) and i.kernel), None)
            self._accel = accel.choose(self.options.accel, kernel, self.options.require_kvm)
        return self._accel

    def spec(self, distro: catalog.Distro | str, seed_format: str = "",
               extra_config: dict | str | None = None,
               kernel_boot: KernelBoot | None = None) -> MachineSpec:
        """What a machine of `distro` boots from, with the session's image for it."""
        if isinstance(distro, str):
            distro = catalog.get(distro)
        return MachineSpec(distro, self.images.get(distro), seed_format, extra_config, kernel_boot)

    def machine(self, name: str, spec: MachineSpec, cold: bool = False,
                wire: Callable[[Machine], None] | None = None) -> Machine:
        """A ready machine: restored from the spec's save (the first one of a spec
        boots cold and is saved), or booted from scratch with `cold` or without saves.
        `wire` is given the machine, and its template, before they boot (a cluster
        plugs them into its switch)."""
        if not (cold or self.templates is None or spec.kernel_boot is not None) and \
                (failed := self.failed_templates.get(spec.key())):
            raise TemplateFailed(f"{name}: {failed}")
        m = self.new_machine(name, spec)
        if wire is not None:
            wire(m)
        if cold or self.templates is None or spec.kernel_boot is not None:
            return m.start()
        return self.templates.restore(spec.key(), lambda: self._template(spec, name, wire), m)

    def new_machine(self, name: str, spec: MachineSpec) -> Machine:
        """A machine not yet booted (for tests that drive start() themselves)."""
        m = Machine(name, spec, self)
        self.machines.append(m)
        return m

    def _template(self, spec: MachineSpec, wanted_by: str,
                  wire: Callable[[Machine], None] | None = None) -> Machine:
        """The spec's first machine, booted cold to be saved. A failed boot is kept
        with its message and console: every later machine of the spec fails with
        the same, at once, instead of a cold boot that would fail the same way."""
        name = f"{spec.distro.name}-t{spec.key()[:6]}".replace("_", "-")
        template = self.new_machine(name, spec)
        if wire is not None:
            wire(template)
        try:
            return template.start()
        except Exception as e:
            self.failed_templates[spec.key()] = TemplateFailed(
                f"the template {name} of {spec.distro.name} (machine spec {spec.key()}) "
                f"failed to boot for {wanted_by} and is not booted again in this run "
                f"(console: {template.console_log}):\n{type(e).__name__}: {e}")
            raise


def options_for_images(distro: str, image: str | Path | None) -> dict[str, Path]:
    """`--image PATH` replaces the image of the one distro it was given with."""
    return {distro: Path(image)} if image else {}
