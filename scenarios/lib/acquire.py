"""Store one synthetic image to the PACS, as the modality always does. Result: the outcome, how many
were stored and the stored image's SOP Instance UID."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "store", "--images", "1", "--patient-name", args["patient_name"],
                      "--accession", args["accession"]], capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
stored = result.get("stored", [])
print(json.dumps({"outcome": result["outcome"], "stored": len(stored), "sop_instance_uid": stored[0]["sop_instance_uid"] if stored else None,
                  "study_uid": stored[0]["study_uid"] if stored else None}))
