"""On the PACS: run the integrity job now (POST /pacslab/verify over loopback, the administrator's
credentials from Orthanc's own configuration) and look for the integrity-failure event of the
tampered instance in the PACS's event log. An instance stored without an MD5 (orthanc_md5 false) is
named unverifiable, not failed."""

import base64
import json
import urllib.request

instance = CONTEXT["run"]["tamper"]["instance"]  # noqa: F821 (given by the scenario runner)
config = json.load(open("/etc/pacslab/orthanc/orthanc.json"))
user, password = next(iter(config["RegisteredUsers"].items()))
request = urllib.request.Request(f"http://127.0.0.1:{config['HttpPort']}/pacslab/verify", data=b"", method="POST",
                                 headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
answer = json.load(urllib.request.urlopen(request, timeout=120))
events = []
with open("/var/log/pacslab/orthanc-events.json") as log:
    for line in log:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
logged = any(e.get("event") == "integrity-failure" and e.get("instance") == instance for e in events)
print(json.dumps({"failure_named": instance in answer.get("failures", []), "failures": len(answer.get("failures", [])),
                  "unverifiable_named": instance in answer.get("unverifiable", []),
                  "checked": answer.get("checked"), "event_logged": logged}))
