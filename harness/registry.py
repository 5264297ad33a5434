"""The extension points: what the names in images/catalog.toml stand for.

The catalog is the first step of a run and checks every name an entry gives when
it loads, so the names live here, below every step, and this module imports no
other part of the harness: the catalog checks them without loading the steps
that implement them.

- `promises.update`: UPDATE_ADAPTERS names the class that updates, rolls back and
  tells the slot (harness.updates.Updater), as "module:Class", imported only when
  a machine is updated. A new mechanism is a module in harness/updates/ and a line
  here.
- `image.build`: BUILT_DISKS, the disks one refos build makes (harness.images.build).
- `boot.seed` and `boot.seed_options`: the first-boot writers register themselves in
  harness.seed (WRITERS, with the options each takes); harness.seed imports only
  harness.paths and harness.settings below it, so the catalog imports it directly.
"""

# promises.update -> its adapter, "module:Class".
UPDATE_ADAPTERS: dict[str, str] = {
    "refos": "harness.updates.refos:Refos",
    "ostree": "harness.updates.ostree:Ostree",
    "update-engine": "harness.updates.update_engine:UpdateEngine",
    "snap": "harness.updates.snap:Snap",
    "snappy": "harness.updates.snappy:Snappy",
    "ros": "harness.updates.ros:Ros",
}
# Mechanisms the catalog may name that have no adapter (yet): their rollback skips
# with the distro's own note.
WITHOUT_ADAPTER = ("tdnf", "none")

# image.build -> the disk's file in the build's folder.
BUILT_DISKS: dict[str, str] = {
    "disk": "refos.qcow2",
    "noapparmor_disk": "refos-noapparmor.qcow2",
    "ignition_disk": "refos-ignition.qcow2",
    "ostree_disk": "refos-ostree.qcow2",
    "snap_disk": "refos-snap.qcow2",
}


def update_mechanisms() -> tuple[str, ...]:
    """Every value the catalog's `promises.update` may take."""
    return (*UPDATE_ADAPTERS, *WITHOUT_ADAPTER)
