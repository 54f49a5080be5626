"""On an Orthanc host: how many instances its index holds for a patient name (REST /tools/find over
loopback, with the administrator's credentials from Orthanc's own configuration)."""

import base64
import json
import urllib.request

config = json.load(open("/etc/pacslab/orthanc/orthanc.json"))
user, password = next(iter(config["RegisteredUsers"].items()))
query = {"Level": "Instance", "Query": {"PatientName": CONTEXT["args"]["patient_name"]}}  # noqa: F821
request = urllib.request.Request(f"http://127.0.0.1:{config['HttpPort']}/tools/find", data=json.dumps(query).encode(), method="POST",
                                 headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
print(json.dumps({"instances": len(json.load(urllib.request.urlopen(request, timeout=60)))}))
