"""On the flooding modality: start dicomsim's flood in the background (its result goes to a file),
or collect that result (waiting up to 60 s), or stop it. Files: /tmp/pacslab-W12-flood.{json,pid}."""

import json
import os
import signal
import subprocess
import time

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
out, pidfile = "/tmp/pacslab-W12-flood.json", "/tmp/pacslab-W12-flood.pid"
if args.get("collect") or args.get("stop"):
    deadline = time.monotonic() + (0 if args.get("stop") else 60)
    while not (os.path.exists(out) and os.path.getsize(out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    result = None
    if os.path.exists(out) and os.path.getsize(out):
        result = json.loads(open(out).read().strip().splitlines()[-1])
    elif os.path.exists(pidfile):
        pid = int(open(pidfile).read())
        try:  # only the flood this script started: a pid left in the file may belong to another program by now
            if b"dicomsim.py\0flood" in open(f"/proc/{pid}/cmdline", "rb").read():
                os.kill(pid, signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError):
            pass
    for f in (out, pidfile):
        if os.path.exists(f):
            os.remove(f)
    print(json.dumps({"finished": result is not None, "flood": result}))
else:
    proc = subprocess.Popen(["python3", "/usr/local/lib/pacslab/dicomsim.py", "flood", "--count", str(args["count"]), "--hold", str(args["hold"])],
                            stdout=open(out, "w"), stderr=subprocess.DEVNULL, start_new_session=True)
    open(pidfile, "w").write(str(proc.pid))
    time.sleep(0.5)  # the associations are being opened
    print(json.dumps({"started": proc.poll() is None, "pid": proc.pid}))
