"""On the siem: the hosts whose malware-refused events (roles/orthanc's scan, C-DET-02) name
args.accession since the run began, and the hosts of the malware-detected alerts that hold those
events, read from the siem's store (/var/lib/pacslab-siem/events.sqlite, opened read only). It waits
up to args.wait seconds for a refusal with its alert (a forward to the VNA comes after the PACS's
stable age); with refusals, until each has its alert. Result: {refused_by: [hosts], alerted: [hosts]}, sorted."""

import datetime as dt
import json
import sqlite3
import time

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
since = dt.datetime.fromtimestamp(CONTEXT["since"] - 1, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: F821


def look() -> tuple[dict[int, str], set[str]]:
    db = sqlite3.connect("file:/var/lib/pacslab-siem/events.sqlite?mode=ro", uri=True, timeout=10)
    try:
        refusals = dict(db.execute("SELECT id, host FROM events WHERE event_type = 'malware-refused' AND time >= ? AND instr(message, ?) > 0",
                                   (since, json.dumps(args["accession"]))).fetchall())
        alerted = set()
        for (events,) in db.execute("SELECT events FROM alerts WHERE rule = 'malware-detected'"):
            alerted |= {refusals[i] for i in json.loads(events) if i in refusals}
        return refusals, alerted
    finally:
        db.close()


started = time.monotonic()
while True:
    refusals, alerted = look()
    if (refusals and set(refusals.values()) == alerted) or time.monotonic() - started > float(args.get("wait", 30)):
        break
    time.sleep(1)
print(json.dumps({"refused_by": sorted(set(refusals.values())), "alerted": sorted(alerted)}))
