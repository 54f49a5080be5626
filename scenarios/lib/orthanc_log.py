"""On an Orthanc host: the lines of Orthanc's log (glog format, "E1130 13:05:03.946601 File.cpp:12] text",
UTC) written since the run began that contain args.needle. Result: found, and the first such line."""

import datetime as dt
import json
import re

since = dt.datetime.fromtimestamp(CONTEXT["since"], dt.UTC)  # noqa: F821 (given by the scenario runner)
needle = CONTEXT["args"]["needle"]  # noqa: F821
stamp = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+) ")
hits = []
with open(CONTEXT["args"].get("log", "/var/log/pacslab/orthanc.log"), errors="replace") as log:  # noqa: F821
    for line in log:
        m = stamp.match(line)
        if not m or needle not in line:
            continue
        month, day, hour, minute, second, micro = (int(g) for g in m.groups())
        when = dt.datetime(since.year, month, day, hour, minute, second, int(str(micro)[:6].ljust(6, "0")), dt.UTC)
        if when >= since - dt.timedelta(seconds=1):
            hits.append(line.strip())
print(json.dumps({"found": bool(hits), "lines": len(hits), "first": hits[0] if hits else None}))
