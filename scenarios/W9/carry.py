"""Store one synthetic image to the PACS from this modality, carrying args.payload_hex (bytes, in hex)
in a private OB element: what a compromised modality would slip into an object. Result: dicomsim's
outcome, how many were stored, and the status of each instance the PACS refused (hex)."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "store", "--images", "1", "--retries", "0",
                      "--patient-name", args["patient_name"], "--accession", args["accession"], "--payload-hex", args["payload_hex"]],
                     capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"outcome": result["outcome"], "stored": len(result.get("stored", [])),
                  "refused": [f"0x{f['status']:04X}" for f in result.get("failed", []) if f.get("status") is not None]}))
