"""The watch over each host's supervised programs, pacslab-supervision
(roles/log_shipping/files/pacslab_supervision.py; C-PRT-01's AU-5, C-PRT-04): what it reports of
supervisor's answers, tick by tick (supervisor's own protocol and XML-RPC are proven live,
tests/integration/test_siem.py)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("pacslab_supervision",
                                               HERE.parent.parent / "roles" / "log_shipping" / "files" / "pacslab_supervision.py")
assert _spec and _spec.loader
supervision = importlib.util.module_from_spec(_spec)
sys.modules["pacslab_supervision"] = supervision  # its dataclass looks its module up
_spec.loader.exec_module(supervision)

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def proc(name: str, state: str, group: str | None = None, description: str = "") -> dict[str, Any]:
    return {"group": group or name, "name": name, "statename": state, "description": description}


def conf(name: str, group: str | None = None, autostart: bool = True, inuse: bool = True) -> dict[str, Any]:
    return {"group": group or name, "name": name, "autostart": autostart, "inuse": inuse}


CONFIGS = [conf("dicom-wire"), conf("rsyslogd"), conf("pacslab-supervision")]


def test_a_program_stopped_longer_than_the_grace_is_reported_once_then_its_return() -> None:
    watch = supervision.Supervision(after=30, own="pacslab-supervision")
    running = [proc("dicom-wire", "RUNNING"), proc("rsyslogd", "RUNNING"), proc("pacslab-supervision", "RUNNING")]
    stopped = [proc("dicom-wire", "STOPPED", description="Dec 07 12:00 PM"), *running[1:]]
    assert watch.tick(running, CONFIGS, T0) == []
    assert watch.tick(stopped, CONFIGS, T0 + 5) == []
    assert watch.tick(stopped, CONFIGS, T0 + 34.9) == []
    assert watch.tick(stopped, CONFIGS, T0 + 35) == [
        {"time": "2026-11-30T00:53:55.000Z", "event": "program-down", "program": "dicom-wire", "state": "STOPPED",
         "description": "Dec 07 12:00 PM", "since": "2026-11-30T00:53:25.000Z", "down_seconds": 30.0}]
    assert watch.tick(stopped, CONFIGS, T0 + 40) == []  # once
    assert watch.tick(running, CONFIGS, T0 + 45) == [
        {"time": "2026-11-30T00:54:05.000Z", "event": "program-up", "program": "dicom-wire", "state": "RUNNING",
         "description": "", "since": "2026-11-30T00:53:25.000Z", "down_seconds": 40.0}]
    assert watch.tick(running, CONFIGS, T0 + 50) == []


def test_a_restart_within_the_grace_is_no_event_and_each_outage_has_its_own_clock() -> None:
    watch = supervision.Supervision(after=30, own="pacslab-supervision")
    for at, state in ((0, "RUNNING"), (5, "STOPPING"), (6, "STOPPED"), (8, "STARTING"), (10, "RUNNING"), (30, "EXITED"),
                      (40, "BACKOFF"), (55, "RUNNING")):
        assert watch.tick([proc("dicom-wire", state), proc("rsyslogd", "RUNNING")], CONFIGS, T0 + at) == [], at
    assert watch.down == {}


def test_the_clock_runs_through_supervisor_s_retries_and_the_record_names_the_state_it_ended_in() -> None:
    watch = supervision.Supervision(after=30)
    for at, state in ((0, "EXITED"), (1, "BACKOFF"), (3, "STARTING"), (4, "BACKOFF"), (20, "FATAL")):
        assert watch.tick([proc("suricata", state, description="Exited too quickly (process log may have details)")],
                          [conf("suricata")], T0 + at) == []
    [down] = watch.tick([proc("suricata", "FATAL", description="Exited too quickly (process log may have details)")], [conf("suricata")],
                        T0 + 30)
    assert (down["event"], down["state"], down["since"], down["down_seconds"]) == ("program-down", "FATAL", "2026-11-30T00:53:20.000Z", 30.0)
    assert down["description"] == "Exited too quickly (process log may have details)"


def test_a_program_removed_from_supervisor_is_reported_unless_it_is_loaded_again_within_the_grace() -> None:
    watch = supervision.Supervision(after=30)
    both = [conf("hids"), conf("clamd")]
    assert watch.tick([proc("hids", "RUNNING"), proc("clamd", "RUNNING")], both, T0) == []
    # a converge drops hids and loads it again (supervisorctl absent, present); clamd is removed for good
    assert watch.tick([], [], T0 + 1) == []
    assert watch.tick([proc("hids", "RUNNING")], [conf("hids")], T0 + 3) == []
    [removed] = watch.tick([proc("hids", "RUNNING")], [conf("hids")], T0 + 31)
    assert {k: removed[k] for k in ("event", "program", "state", "description")} == {
        "event": "program-down", "program": "clamd", "state": "REMOVED", "description": ""}
    assert watch.tick([proc("hids", "RUNNING")], [conf("hids")], T0 + 60) == []
    [back] = watch.tick([proc("hids", "RUNNING"), proc("clamd", "RUNNING")], both, T0 + 65)
    assert (back["event"], back["program"], back["down_seconds"]) == ("program-up", "clamd", 64.0)


def test_a_program_removed_by_hand_is_reported_and_one_read_but_not_yet_loaded_is_not_watched() -> None:
    """`supervisorctl remove hids` leaves hids in the configuration files (inuse false): REMOVED;
    `supervisorctl reread` of a new program without `add` is not yet supervisor's to run."""
    watch = supervision.Supervision(after=30)
    assert watch.tick([proc("hids", "RUNNING")], [conf("hids"), conf("newcomer", inuse=False)], T0) == []
    [removed] = watch.tick([], [conf("hids", inuse=False), conf("newcomer", inuse=False)], T0 + 1) + \
        watch.tick([], [conf("hids", inuse=False), conf("newcomer", inuse=False)], T0 + 31)
    assert (removed["event"], removed["program"], removed["state"]) == ("program-down", "hids", "REMOVED")
    assert watch.tick([], [conf("hids", inuse=False), conf("newcomer", inuse=False)], T0 + 300) == []
    assert supervision.started(watch, [conf("hids", inuse=False), conf("newcomer", inuse=False)], T0)["programs"] == []
    # added (loaded), the newcomer is watched like any other
    assert watch.tick([proc("newcomer", "STOPPED")], [conf("newcomer")], T0 + 301) == []
    assert [r["program"] for r in watch.tick([proc("newcomer", "STOPPED")], [conf("newcomer")], T0 + 331)] == ["newcomer"]


def test_the_listener_itself_a_program_without_autostart_and_one_never_configured_are_none_of_its_business() -> None:
    watch = supervision.Supervision(after=30, own="pacslab-supervision")
    configs = [conf("pacslab-supervision"), conf("by-hand", autostart=False)]
    processes = [proc("pacslab-supervision", "STOPPED"), proc("by-hand", "STOPPED"), proc("stray", "FATAL")]
    assert watch.tick(processes, configs, T0) == [] and watch.tick(processes, configs, T0 + 300) == []


def test_a_process_of_a_group_of_several_is_named_group_colon_name() -> None:
    watch = supervision.Supervision(after=30)
    configs = [conf("scp_00", group="scp"), conf("scp_01", group="scp")]
    processes = [proc("scp_00", "RUNNING", group="scp"), proc("scp_01", "FATAL", group="scp")]
    watch.tick(processes, configs, T0)
    assert [r["program"] for r in watch.tick(processes, configs, T0 + 30)] == ["scp:scp_01"]


def test_the_start_record_names_what_is_watched_and_each_record_is_one_json_line() -> None:
    watch = supervision.Supervision(after=30, own="pacslab-supervision")
    start = supervision.started(watch, [*CONFIGS, conf("by-hand", autostart=False)], T0)
    assert start == {"time": "2026-11-30T00:53:20.000Z", "event": "supervision-started", "programs": ["dicom-wire", "rsyslogd"],
                     "after_seconds": 30, "heartbeat_seconds": 0.0}
    out = io.StringIO()
    supervision.write(out, [start, {"event": "program-up", "program": "a\nb"}])
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [start, {"event": "program-up", "program": "a\nb"}]


def test_the_heartbeat_comes_at_the_first_look_and_then_every_heartbeat_seconds_with_what_is_not_running() -> None:
    watch = supervision.Supervision(after=30, own="pacslab-supervision", heartbeat=30)
    running = [proc("dicom-wire", "RUNNING"), proc("rsyslogd", "RUNNING")]
    beats = {at: [r for r in watch.tick(running if at < 10 else [proc("dicom-wire", "BACKOFF"), running[1]], CONFIGS, T0 + at)
                  if r["event"] == "supervision-alive"] for at in range(0, 65, 5)}
    assert {at: b for at, b in beats.items() if b} == {
        0: [{"time": "2026-11-30T00:53:20.000Z", "event": "supervision-alive", "programs": 2, "not_running": []}],
        30: [{"time": "2026-11-30T00:53:50.000Z", "event": "supervision-alive", "programs": 2, "not_running": ["dicom-wire"]}],
        60: [{"time": "2026-11-30T00:54:20.000Z", "event": "supervision-alive", "programs": 2, "not_running": ["dicom-wire"]}]}
