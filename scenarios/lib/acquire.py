"""Store synthetic images to the PACS, as the modality always does: one image, or with args.studies
that many studies of one image each (each its own Study Instance UID, one association), under
args.accession (with args.per_run, that accession and "-" and the run's start in seconds, its last
six digits: a second run before a reset finds its own studies only). Result: the outcome, how many
images were stored, how many different studies, the accession, and the first stored image's SOP
Instance UID and study."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
accession = f"{args['accession']}-{int(CONTEXT['since']) % 1000000:06d}" if args.get("per_run") else args["accession"]  # noqa: F821
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "store", "--images", "1", "--studies", str(int(args.get("studies", 1))),
                      "--patient-name", args["patient_name"], "--accession", accession], capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
stored = result.get("stored", [])
print(json.dumps({"outcome": result["outcome"], "stored": len(stored), "studies": len({s["study_uid"] for s in stored}), "accession": accession,
                  "sop_instance_uid": stored[0]["sop_instance_uid"] if stored else None,
                  "study_uid": stored[0]["study_uid"] if stored else None}))
