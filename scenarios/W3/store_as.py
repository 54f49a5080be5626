"""Store one synthetic instance to the PACS from this modality, calling itself by another host's AE
title; with rogue_certificate, over a self-signed certificate for that host's name (no lab CA
issued it). Result: dicomsim's outcome, its TLS alert or A-ASSOCIATE-RJ, and how many were stored."""

import json
import os
import subprocess
import tempfile

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
target = CONTEXT["hosts"][args["as_host"]]  # noqa: F821
argv = ["python3", "/usr/local/lib/pacslab/dicomsim.py", "store", "--images", "1", "--retries", "0",
        "--calling", target["ae_title"], "--patient-name", args["patient_name"], "--accession", args["accession"]]
with tempfile.TemporaryDirectory() as tmp:
    if args.get("rogue_certificate"):
        key, crt = os.path.join(tmp, "rogue.key"), os.path.join(tmp, "rogue.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                        "-subj", f"/CN={args['as_host']}", "-keyout", key, "-out", crt], check=True, capture_output=True)
        argv += ["--tls", f"cert:{crt}:{key}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"outcome": result["outcome"], "tls_alert": result.get("tls_alert"), "reject": result.get("reject"),
                  "stored": len(result.get("stored", []))}))
