"""On the siem: the events of args.event_type since the run began, named by their args.name_by
column (user or host), and which of them an alert of args.rule holds, read from the siem's store
(/var/lib/pacslab-siem/events.sqlite, opened read only). Only events whose name is in args.names
(when given) and whose raw message holds args.contains (when given) count. It waits up to args.wait
seconds for every such event's alert; with no such event, only args.grace seconds (default 5) for
one still on its way. Result: {seen: [names], alerted: [names]}, both sorted; with args.distinct (a
column: study_uid), also {distinct: {name: how many different values its seen events hold}}, and
with args.until_distinct it also waits (up to args.wait) until each name holds that many. With
args.cases, also {cases: [{person, host, owner}]}: the cases of those alerts, by id.
W7: the vendors' sign-ins at the bastion (ssh-login-success by user) and vendor-outside-window
(C-DET-08); W9: the hosts that refused the run's object (malware-refused by host) and malware-detected
(C-DET-02); W8: the insider's reads (dicom-audit-instances-accessed by user, distinct study_uid) and
bulk-access (C-DAT-06)."""

import datetime as dt
import json
import sqlite3
import time

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
since = dt.datetime.fromtimestamp(CONTEXT["since"] - 1, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: F821
NAME_BY = {"user": "user", "host": "host"}[args["name_by"]]  # a column of the events table, never the step's text
DISTINCT = {None: "NULL", "study_uid": "study_uid"}[args.get("distinct")]
query = f"SELECT id, {NAME_BY}, {DISTINCT} FROM events WHERE event_type = ? AND time >= ?"
params: list[str] = [args["event_type"], since]
if args.get("names"):
    query += f" AND {NAME_BY} IN ({','.join('?' * len(args['names']))})"
    params += list(args["names"])
if args.get("contains"):
    query += " AND instr(message, ?) > 0"
    params.append(args["contains"])


def look() -> tuple[dict[int, str], set[str], dict[str, set[str]], list[dict[str, str]]]:
    db = sqlite3.connect("file:/var/lib/pacslab-siem/events.sqlite?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(query, params).fetchall()
        seen, values = {i: name for i, name, _ in rows}, {}
        for _, name, value in rows:
            values.setdefault(name, set()).add(value)
        alerted, case_ids = set(), set()
        for events, case_id in db.execute("SELECT events, case_id FROM alerts WHERE rule = ?", (args["rule"],)):
            held = {seen[i] for i in json.loads(events) if i in seen}
            alerted |= held
            case_ids |= {case_id} if held and case_id is not None else set()
        cases = [{"person": p, "host": h, "owner": o} for p, h, o in db.execute(
            f"SELECT person, host, owner FROM cases WHERE id IN ({','.join('?' * len(case_ids))}) ORDER BY id", sorted(case_ids))
                 ] if args.get("cases") else []
        return seen, alerted, values, cases
    finally:
        db.close()


started = time.monotonic()
while True:
    seen, alerted, values, cases = look()
    waited = time.monotonic() - started
    enough = all(len(v - {None}) >= int(args.get("until_distinct", 0)) for v in values.values())
    if (seen and set(seen.values()) == alerted and enough) or waited > float(args.get("wait", 60)) or (
            not seen and waited > float(args.get("grace", 5))):
        break
    time.sleep(1)
result = {"seen": sorted(set(seen.values())), "alerted": sorted(alerted)}
if args.get("distinct"):
    result["distinct"] = {name: len(v - {None}) for name, v in sorted(values.items())}
if args.get("cases"):
    result["cases"] = cases
print(json.dumps(result))
