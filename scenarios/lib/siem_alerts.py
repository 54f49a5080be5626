"""On the siem: which of args.people signed in at the bastion since the run began (the siem's
ssh-login-success events, from the bastion's sshd log) and which of those sign-ins an alert of
args.rule holds (e.g. vendor-outside-window, C-DET-08), read from the siem's store
(/var/lib/pacslab-siem/events.sqlite, opened read only). It waits up to args.wait seconds for every
sign-in's alert; with no sign-in, only args.grace seconds (default 5) for one still on its way.
Result: {signed_in: [users], alerted: [users]}, both sorted."""

import datetime as dt
import json
import sqlite3
import time

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
since = dt.datetime.fromtimestamp(CONTEXT["since"] - 1, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: F821
people = list(args["people"])


def look() -> tuple[dict[int, str], set[str]]:
    db = sqlite3.connect("file:/var/lib/pacslab-siem/events.sqlite?mode=ro", uri=True, timeout=10)
    try:
        marks = ",".join("?" * len(people))
        signins = dict(db.execute(f"SELECT id, user FROM events WHERE event_type = 'ssh-login-success' AND time >= ? AND user IN ({marks})",
                                  (since, *people)).fetchall())
        alerted = set()
        for (events,) in db.execute("SELECT events FROM alerts WHERE rule = ?", (args["rule"],)):
            alerted |= {signins[i] for i in json.loads(events) if i in signins}
        return signins, alerted
    finally:
        db.close()


started = time.monotonic()
while True:
    signins, alerted = look()
    waited = time.monotonic() - started
    if (signins and set(signins.values()) == alerted) or waited > float(args.get("wait", 60)) or (
            not signins and waited > float(args.get("grace", 5))):
        break
    time.sleep(1)
print(json.dumps({"signed_in": sorted(set(signins.values())), "alerted": sorted(alerted)}))
