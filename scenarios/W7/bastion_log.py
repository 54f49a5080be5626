"""On the bastion: who signed in since the run began (sshd's "Accepted" lines in the bastion's
auth log, with the address they came from) and whose sessions tlog recorded (the user of each
record in the session log), for each person of args.people. Times are the log lines' own (RFC 3339,
the bastion's clock), compared with the run's start (CONTEXT['since'], epoch seconds)."""

import datetime as dt
import json
import re

args, since = CONTEXT["args"], CONTEXT["since"]  # noqa: F821 (given by the scenario runner)


def lines(path):
    """The file's lines since the run began, its rotated copy's first (roles/log_rotation renames a
    full file to .1 and the bastion's rsyslogd starts a new one: a run may straddle the rotation)."""
    for name in (path + ".1", path):
        try:
            with open(name, encoding="utf-8", errors="replace") as f:
                for line in f:
                    stamp = line.split(" ", 1)[0]
                    try:
                        if dt.datetime.fromisoformat(stamp).timestamp() >= since:
                            yield line
                    except ValueError:
                        continue
        except FileNotFoundError:
            continue


signed_in, recorded = set(), set()
for line in lines(args["auth_log"]):
    m = re.search(r"Accepted \S+ for (\S+) from (\S+) port", line)
    if m and m.group(1) in args["people"]:
        signed_in.add(m.group(1))
for line in lines(args["sessions_log"]):
    _, sep, payload = line.partition(" tlog: ")
    if sep:
        user = json.loads(payload).get("user")
        if user in args["people"]:
            recorded.add(user)
print(json.dumps({"signed_in": sorted(signed_in), "recorded": sorted(recorded)}))
