"""On the IdP: the lines of the portal's log (LemonLDAP::NG's Std logger, "[Tue Dec  1 17:00:00
2026] [LLNG:pid] [notice] text", UTC) written since the run began that say a password was refused
("Bad password for USER (ADDRESS)"). Result: per user, where the refusals came from (the lab host
of that address, by name; else the address), and how many refusals."""

import datetime as dt
import json
import re

since = dt.datetime.fromtimestamp(CONTEXT["since"], dt.UTC).replace(tzinfo=None)  # noqa: F821 (given by the scenario runner)
line_re = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d \d{4})\] .*Bad password for (\S+) \(([^)]*)\)")
names = {h["address"]: n for n, h in CONTEXT["hosts"].items() if h["address"]}  # noqa: F821
refused: dict = {}
with open("/var/log/pacslab/llng.log", errors="replace") as log:
    for line in log:
        m = line_re.match(line)
        if not m or dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y") < since - dt.timedelta(seconds=1):
            continue
        entry = refused.setdefault(m.group(2), {"from": set(), "count": 0})
        entry["from"].add(names.get(m.group(3), m.group(3)))
        entry["count"] += 1
print(json.dumps({"refused": {u: {"from": sorted(e["from"]), "count": e["count"]} for u, e in sorted(refused.items())}}))
