"""On the PACS: flip one byte of the file that holds the image the acquire step stored (XOR 0xFF, so
running it again with undo puts the byte back). The file is found through Orthanc's PostgreSQL
index by the image's SOP Instance UID. Result: the Orthanc instance id, the file, the offset."""

import json
import re
import subprocess

run = CONTEXT["run"]  # noqa: F821 (given by the scenario runner)
uid = run["acquire"]["sop_instance_uid"]
if not re.fullmatch(r"[0-9.]{1,64}", uid or ""):
    raise SystemExit(f"not a DICOM UID: {uid!r}")
query = ("select r.publicid, a.uuid from attachedfiles a join resources r on r.internalid = a.id "
         f"join dicomidentifiers d on d.id = a.id where d.taggroup = 8 and d.tagelement = 24 and d.value = '{uid}' and a.filetype = 1")
row = subprocess.run(["su", "postgres", "-c", f'psql -h /var/run/postgresql -d orthanc -tA -F " " -c "{query}"'],
                     capture_output=True, text=True, check=True).stdout.split()
instance, uuid = row[0], row[1]
storage = json.load(open("/etc/pacslab/orthanc/orthanc.json"))["StorageDirectory"]  # orthanc_storage_dir
path = f"{storage}/{uuid[0:2]}/{uuid[2:4]}/{uuid}"
offset = 4000  # inside the pixel data of the simulator's images (header about 1 kB, pixels 512 kB)
with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(offset)
    f.write(bytes([byte[0] ^ 0xFF]))
print(json.dumps({"tampered": not CONTEXT["args"].get("undo"), "restored": bool(CONTEXT["args"].get("undo")),  # noqa: F821
                  "instance": instance, "file": path, "offset": offset}))
