#!/usr/bin/python3
"""pacslab-supervision: the watch over a host's supervised programs (roles/log_shipping,
tasks/supervision.yml), for C-PRT-01 (SP 800-53 AU-5: an audit logging process that fails is
reported) and C-PRT-04 (a watch that has fallen silent): a supervisor event listener (supervisor
4's event listener protocol 3.0, subscribed to TICK_5) that asks supervisord every five seconds
for its programs (XML-RPC ``supervisor.getAllProcessInfo`` and ``getAllConfigInfo``) and writes:

- ``program-down`` once a program supervisor should run (autostart) has not been RUNNING for
  ``--after`` seconds: stopped (``supervisorctl stop``, a stop signal), exited, in BACKOFF, FATAL
  (supervisor gave up restarting it), or REMOVED (no longer loaded: ``supervisorctl remove``, or
  gone from supervisor's configuration; a program read but never loaded is not watched);
- ``program-up`` when a program it reported runs again (or is back in the configuration);
- ``supervision-started`` once per start, naming the programs it watches (a restart of the
  listener itself shows as a second one);
- ``supervision-alive`` every ``--heartbeat`` seconds, with the programs out of RUNNING: the
  siem raises log-source-silent about a source whose heartbeat stops (its listener, its
  shipping, its supervisord or the host itself stopped).

A restart or a converge that loads a program again within ``--after`` seconds is no event; a
program that starts and stops between two ticks is not seen. What it cannot report itself: its own
stop, supervisord's (the container's first process: the container ends), and a record rsyslogd
cannot ship while it is the program down (it ships the record once it runs again, from its read
position); its heartbeat's silence says so at the siem.

Records are JSON objects, one per line, on standard error (supervisor's log of the listener,
rotated by supervisor; standard output is the protocol's): {"time" (RFC 3339 UTC), "event",
"program" (supervisor's name: the program's, or group:name in a group of several), "state"
(supervisor's state name, or REMOVED), "description" (supervisor's), "since" (when it left
RUNNING), "down_seconds"}.

Usage (supervisor's [eventlistener:x] command, installed as /usr/local/sbin/pacslab-supervision):
    pacslab-supervision --after 30 --heartbeat 15
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

RUNNING = "RUNNING"
REMOVED = "REMOVED"


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def program_name(info: dict[str, Any]) -> str:
    """supervisor's name of a process: its program's name, or group:name in a group of others."""
    group, name = str(info.get("group", "")), str(info.get("name", ""))
    return name if group in ("", name) else f"{group}:{name}"


def watched(configs: list[dict[str, Any]]) -> set[str]:
    """The programs of getAllConfigInfo's ``configs`` supervisor should run: started with it
    (autostart) and loaded (inuse: in a process group supervisord runs)."""
    return {program_name(c) for c in configs if c.get("autostart", True) and c.get("inuse", True)}


@dataclass
class Supervision:
    """What the listener knows between ticks: each watched program it saw out of RUNNING (since
    when, its last state and description, whether reported), and every program it has seen."""

    after: float
    own: str = ""
    heartbeat: float = 0.0  # seconds between two supervision-alive records; 0: none
    down: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    beat: float | None = None  # when the last supervision-alive was written

    def tick(self, processes: list[dict[str, Any]], configs: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
        """The records of one look at supervisor: ``processes`` as getAllProcessInfo returns them
        ({group, name, statename, description, ...}), ``configs`` as getAllConfigInfo ({group,
        name, autostart, inuse, ...}: a program without autostart is none of its business, nor one
        read from the configuration and not loaded, `supervisorctl reread` without `add`), ``at``
        the time (epoch seconds). A program once watched and now not loaded (`supervisorctl
        remove`, or gone from the configuration) is REMOVED."""
        wanted = watched(configs) - {self.own}
        states = {program_name(p): p for p in processes}
        self.seen |= wanted
        records = []
        for name in sorted(self.seen):
            info = states.get(name) if name in wanted else None
            state = str(info.get("statename", "UNKNOWN")) if info else REMOVED
            description = str(info.get("description", "")) if info else ""
            if state == RUNNING:
                gone = self.down.pop(name, None)
                if gone and gone["reported"]:
                    records.append(self._record("program-up", name, state, description, gone["since"], at))
                continue
            entry = self.down.setdefault(name, {"since": at, "reported": False})
            if not entry["reported"] and at - entry["since"] >= self.after:
                entry["reported"] = True
                records.append(self._record("program-down", name, state, description, entry["since"], at))
        if self.heartbeat and (self.beat is None or at - self.beat >= self.heartbeat):
            self.beat = at
            records.append({"time": stamp(at), "event": "supervision-alive", "programs": len(wanted), "not_running": sorted(self.down)})
        return records

    @staticmethod
    def _record(event: str, name: str, state: str, description: str, since: float, at: float) -> dict[str, Any]:
        return {"time": stamp(at), "event": event, "program": name, "state": state, "description": description,
                "since": stamp(since), "down_seconds": round(at - since, 1)}


def started(supervision: Supervision, configs: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """The record of the listener's start: the programs it watches and after how long it reports one."""
    return {"time": stamp(at), "event": "supervision-started", "programs": sorted(watched(configs) - {supervision.own}),
            "after_seconds": supervision.after,
            "heartbeat_seconds": supervision.heartbeat}


def write(out: TextIO, records: list[dict[str, Any]]) -> None:
    for record in records:
        out.write(json.dumps(record, sort_keys=True) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-supervision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--after", type=float, default=30.0, help="seconds out of RUNNING before a program is reported (default 30)")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="seconds between two supervision-alive records (default 15; 0: none)")
    args = parser.parse_args(argv)
    # supervisor's own library (Debian's supervisor package, on every host that runs supervisord):
    # the listener protocol and the XML-RPC client over supervisord's socket (SUPERVISOR_SERVER_URL).
    from supervisor import childutils  # noqa: PLC0415 (the unit suite reads the logic above without supervisor)

    rpc = childutils.getRPCInterface(os.environ)
    own = program_name({"group": os.environ.get("SUPERVISOR_GROUP_NAME", ""), "name": os.environ.get("SUPERVISOR_PROCESS_NAME", "")})
    supervision = Supervision(after=args.after, own=own, heartbeat=args.heartbeat)
    write(sys.stderr, [started(supervision, rpc.supervisor.getAllConfigInfo(), time.time())])
    while True:
        childutils.listener.wait(sys.stdin, sys.stdout)  # READY, then the next event (a TICK_5)
        try:
            write(sys.stderr, supervision.tick(rpc.supervisor.getAllProcessInfo(), rpc.supervisor.getAllConfigInfo(), time.time()))
        except Exception as exc:  # supervisord busy or reloading: the next tick asks again
            print(json.dumps({"time": stamp(time.time()), "event": "supervision-failed", "error": f"{type(exc).__name__}: {exc}"}),
                  file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
