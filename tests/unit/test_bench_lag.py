"""make bench's SSH lag counts from when the guest lets users log in, not from when
sshd listens: before systemd-user-sessions.service has removed /run/nologin,
pam_nologin refuses the harness's user whatever the harness does. Entries shaped
like `journalctl -o json` (systemd.journal-fields(7)); times in microseconds."""

import json
from types import SimpleNamespace

from tools import bench


def _entry(at_s: float, message: str, **fields) -> str:
    return json.dumps({"MESSAGE": message, "__MONOTONIC_TIMESTAMP": str(int(at_s * 1e6)),
                       **fields})


def _machine(*lines: str, user: str = "refos") -> SimpleNamespace:
    return SimpleNamespace(succeed=lambda cmd: "\n".join(lines) + "\n",
                           distro=SimpleNamespace(boot=SimpleNamespace(ssh_user=user)))


SSHD = (
    # syslog messages also carry the sender's stamp; the bench keeps to journald's
    _entry(39.4, "Server listening on 0.0.0.0 port 22.", _SOURCE_REALTIME_TIMESTAMP="1"),
    _entry(39.5, "Server listening on :: port 22."),
    _entry(40.1, "fatal: Access denied for user refos by PAM account configuration [preauth]"),
    _entry(41.2, "Accepted publickey for refos from 10.0.2.2 port 42090 ssh2: ED25519 ..."),
)
USER_SESSIONS = (
    _entry(39.9, "Starting systemd-user-sessions.service - Permit User Sessions...",
           UNIT="systemd-user-sessions.service"),
    _entry(41.0, "Finished systemd-user-sessions.service - Permit User Sessions.",
           UNIT="systemd-user-sessions.service", JOB_TYPE="start",
           JOB_RESULT="done"),
)


def test_lag_counts_from_the_later_of_sshd_listening_and_logins_permitted():
    times = bench._login_times(_machine(*SSHD, *USER_SESSIONS))
    assert round(times["accepted"] - times["listening"], 2) == 1.8
    assert round(times["accepted"] - times["permitted"], 2) == 0.2


def test_without_the_user_sessions_unit_logins_count_as_permitted_when_sshd_listens():
    times = bench._login_times(_machine(*SSHD))
    assert times["permitted"] == times["listening"] == 39.4


def test_root_logs_in_whenever_sshd_listens():
    times = bench._login_times(_machine(*SSHD, *USER_SESSIONS, user="root"))
    assert times["permitted"] == times["listening"]


def test_a_missing_stamp_gives_no_lag_rather_than_a_wrong_one():
    times = bench._login_times(_machine(*SSHD[:2], *USER_SESSIONS))
    assert bench._since(times, "permitted") is None
