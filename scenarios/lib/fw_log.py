"""On the fw: the drop log's lines (ulogd2 JSON, one per dropped packet) written since the run began
with the given prefix (args.prefix, e.g. "pacslab deny ") whose source is args.source (a host name of
the lab), waiting up to args.wait seconds for the first, then until no more arrive for 2 s (a burst's
last lines can reach the file a moment after its first; the wait still bounds it). Result: whether any, the destination hosts
and ports they name (host names where the address is a lab host), the sources seen with that prefix
(host names), and whether one names args.destination (a host name) as its destination."""

import datetime as dt
import json
import time

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
since = CONTEXT["since"] - 1  # noqa: F821
names = {h["address"]: name for name, h in hosts.items() if h["address"]}
source = hosts[args["source"]]["address"] if args.get("source") else None


def lines() -> list[dict]:
    found = []
    for line in read("/var/log/pacslab/fw-drops.json.1") + read("/var/log/pacslab/fw-drops.json"):  # .1: rotated away meanwhile
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        when = dt.datetime.fromisoformat(entry.get("timestamp", "1970-01-01T00:00:00")).replace(tzinfo=dt.UTC).timestamp()
        if when >= since and entry.get("oob.prefix") == args["prefix"]:
            found.append(entry)
    return found


def read(path: str) -> list[str]:
    try:
        with open(path, errors="replace") as log:
            return log.readlines()
    except FileNotFoundError:
        return []


deadline = time.monotonic() + float(args.get("wait", 10))
seen, quiet_since = -1, time.monotonic()
while True:
    entries = lines()
    mine = [e for e in entries if source is None or e.get("src_ip") == source]
    if len(mine) != seen:
        seen, quiet_since = len(mine), time.monotonic()
    if (mine and time.monotonic() - quiet_since >= 2) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({
    "logged": bool(mine),
    "sources": sorted({names.get(e.get("src_ip"), e.get("src_ip")) for e in entries}),
    "destinations": sorted({names.get(e.get("dest_ip"), e.get("dest_ip")) for e in mine}),
    "ports": sorted({e.get("dest_port") for e in mine if e.get("dest_port") is not None}),
    "to_destination": any(names.get(e.get("dest_ip")) == args.get("destination") for e in mine),
}))
