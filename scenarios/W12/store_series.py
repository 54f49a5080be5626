"""Store a synthetic series to the PACS. Result: how many were stored and left unacknowledged, the
associations it took, and the seconds."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "store", "--images", str(args["images"]), "--patient-name",
                      args["patient_name"], "--accession", args["accession"]], capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"stored": len(result.get("stored", [])), "unacknowledged": len(result.get("unacknowledged", [])),
                  "associations": len(result.get("attempts", [])), "seconds": result.get("seconds")}))
