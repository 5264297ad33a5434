"""Read a seed directory with cloud-init's own datasource code; print what it got.

Run under the system Python, where Debian's cloud-init package lives:
    /usr/bin/python3 cloudinit_reader.py {nocloud|config-2} SEED_DIR WORK_DIR
SEED_DIR holds the files of the ISO (extracted by the test, nothing is mounted).
The datasource is pointed at it as its seed directory, with device probing off,
so the reading code is the one the guest runs. Prints JSON on stdout.
"""

import json
import shutil
import sys
from pathlib import Path

from cloudinit import helpers, user_data
from cloudinit.config.schema import SchemaValidationError, validate_cloudconfig_schema
from cloudinit.sources import DataSourceConfigDrive, DataSourceNoCloud
from cloudinit.util import load_yaml

SEED_SUBDIR = {"nocloud": "nocloud", "config-2": "config_drive"}


def read(kind: str, seed: Path, work: Path) -> dict:
    cloud_dir = work / "cloud"
    shutil.copytree(seed, cloud_dir / "seed" / SEED_SUBDIR[kind])
    paths = helpers.Paths({"cloud_dir": str(cloud_dir), "run_dir": str(work / "run")})
    # fs_label None: NoCloud does not look for block devices; ConfigDrive finds
    # its seed directory first and then never probes devices.
    sys_cfg = {"datasource": {"NoCloud": {"fs_label": None}}, "datasource_list": [kind]}
    cls = (DataSourceNoCloud.DataSourceNoCloud if kind == "nocloud"
           else DataSourceConfigDrive.DataSourceConfigDrive)
    ds = cls(sys_cfg, None, paths)
    if not ds.get_data():
        return {"found": False}
    raw = ds.userdata_raw.decode() if isinstance(ds.userdata_raw, bytes) else ds.userdata_raw
    parts = [p.get_content_type() for p in
             user_data.UserDataProcessor(paths).process(raw).walk() if not p.is_multipart()]
    config = load_yaml(raw)
    try:
        validate_cloudconfig_schema(config, strict=True, log_details=False)
        schema_error = ""
    except SchemaValidationError as e:
        schema_error = str(e)
    return {"found": True, "source": str(getattr(ds, "source", "") or ds.seed),
            "metadata": ds.metadata, "instance_id": ds.get_instance_id(),
            "hostname": ds.get_hostname().hostname, "public_keys": ds.get_public_ssh_keys(),
            "part_types": parts, "config": config, "schema_error": schema_error}


if __name__ == "__main__":
    print(json.dumps(read(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])), default=str))
