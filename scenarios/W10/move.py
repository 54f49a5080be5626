"""From the reading workstation: ask the PACS to C-MOVE the acquire step's study to a destination
AE title ("self": this workstation's own). Result: the C-MOVE statuses, the sub-operations
completed."""

import json
import subprocess

args, run = CONTEXT["args"], CONTEXT["run"]  # noqa: F821 (given by the scenario runner)
config = json.load(open("/etc/pacslab/dicom.json"))
destination = config["ae_title"] if args["destination"] == "self" else args["destination"]
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "move", "--study", run["acquire"]["study_uid"],
                      "--destination", destination], capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"destination": destination, "statuses": result.get("statuses"), "last_status": (result.get("statuses") or [None])[-1],
                  "completed": result.get("completed"), "outcome": result.get("outcome")}))
