"""On the siem: the events of args.event_type since the run began, named by their args.name_by
column (user or host), and which of them an alert of args.rule holds, read from the siem's store
(/var/lib/pacslab-siem/events.sqlite, opened read only). Only events whose name is in args.names
(when given) and whose raw message holds args.contains (when given) count. It waits up to args.wait
seconds for every such event's alert; with no such event, only args.grace seconds (default 5) for
one still on its way. Result: {seen: [names], alerted: [names]}, both sorted.
W7: the vendors' sign-ins at the bastion (ssh-login-success by user) and vendor-outside-window
(C-DET-08); W9: the hosts that refused the run's object (malware-refused by host) and malware-detected
(C-DET-02)."""

import datetime as dt
import json
import sqlite3
import time

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
since = dt.datetime.fromtimestamp(CONTEXT["since"] - 1, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: F821
NAME_BY = {"user": "user", "host": "host"}[args["name_by"]]  # a column of the events table, never the step's text
query = f"SELECT id, {NAME_BY} FROM events WHERE event_type = ? AND time >= ?"
params: list[str] = [args["event_type"], since]
if args.get("names"):
    query += f" AND {NAME_BY} IN ({','.join('?' * len(args['names']))})"
    params += list(args["names"])
if args.get("contains"):
    query += " AND instr(message, ?) > 0"
    params.append(args["contains"])


def look() -> tuple[dict[int, str], set[str]]:
    db = sqlite3.connect("file:/var/lib/pacslab-siem/events.sqlite?mode=ro", uri=True, timeout=10)
    try:
        seen = dict(db.execute(query, params).fetchall())
        alerted = set()
        for (events,) in db.execute("SELECT events FROM alerts WHERE rule = ?", (args["rule"],)):
            alerted |= {seen[i] for i in json.loads(events) if i in seen}
        return seen, alerted
    finally:
        db.close()


started = time.monotonic()
while True:
    seen, alerted = look()
    waited = time.monotonic() - started
    if (seen and set(seen.values()) == alerted) or waited > float(args.get("wait", 60)) or (
            not seen and waited > float(args.get("grace", 5))):
        break
    time.sleep(1)
print(json.dumps({"seen": sorted(set(seen.values())), "alerted": sorted(alerted)}))
