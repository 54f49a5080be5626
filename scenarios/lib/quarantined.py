"""On the fw: whether args.host (a host name of the lab) is in the quarantine record that
pacslab-quarantine keeps (/var/lib/pacslab-fw/quarantine.json, C-RSP-02), waiting up to args.wait
seconds for it. Result: whether it is, who put it there ("siem" for a detection's containment, a
person's name otherwise) and the rule the siem named (its reason is "siem alert <id>: <rule>")."""

import json
import time

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
address = hosts[args["host"]]["address"]


def held() -> dict:
    try:
        with open("/var/lib/pacslab-fw/quarantine.json") as record:
            return json.load(record).get(address) or {}
    except FileNotFoundError:
        return {}


deadline = time.monotonic() + float(args.get("wait", 30))
while not (entry := held()) and time.monotonic() < deadline:
    time.sleep(1)
reason = entry.get("reason", "")
print(json.dumps({"quarantined": bool(entry), "by": entry.get("by"),
                  "rule": reason.split(": ", 1)[1] if reason.startswith("siem alert ") and ": " in reason else None}))
