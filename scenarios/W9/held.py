"""From the reading workstation: how many studies the PACS answers for args.accession to a C-FIND
(Study Root, the workstation's own association). Result: {outcome, matches}."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
out = subprocess.run(["python3", "/usr/local/lib/pacslab/dicomsim.py", "find", "--accession", args["accession"]],
                     capture_output=True, text=True, check=False).stdout
result = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"outcome": result["outcome"], "matches": len(result.get("matches", []))}))
