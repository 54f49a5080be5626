"""A C-ECHO from this DICOM node to the PACS, as its configuration reaches it (the legacy device:
through its gateway). Result: dicomsim's outcome and status."""

import json
import subprocess

out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "echo", "--peer", "pacs"], capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"outcome": result["outcome"], "status": result.get("status"), "tls": result.get("tls")}))
