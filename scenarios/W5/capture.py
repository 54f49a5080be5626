"""On the fw: start tcpdump between two lab hosts (args.between), in the background, into
/tmp/pacslab-W5.pcap; or stop it and search the capture for each needle (args.needles: name -> text);
or only stop it and remove the files (args.stop). Needles are plain text."""

import json
import os
import signal
import subprocess
import time

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
pcap, pidfile = "/tmp/pacslab-W5.pcap", "/tmp/pacslab-W5.pid"

if args.get("start"):
    a, b = (hosts[h]["address"] for h in args["between"])
    proc = subprocess.Popen(["timeout", "120", "tcpdump", "-i", "any", "-U", "-s", "0", "-w", pcap, "host", a, "and", "host", b],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    open(pidfile, "w").write(str(proc.pid))
    time.sleep(1.5)  # tcpdump opens its socket
    print(json.dumps({"capturing": proc.poll() is None}))
else:
    if os.path.exists(pidfile):
        pid = int(open(pidfile).read())
        try:  # only the capture this script started: a pid left in the file may belong to another program by now
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"timeout\x00120\x00tcpdump\x00"):
                os.killpg(pid, signal.SIGINT)
                time.sleep(1)
        except (FileNotFoundError, ProcessLookupError):
            pass
    data = open(pcap, "rb").read() if os.path.exists(pcap) else b""
    for f in (pcap, pidfile):
        if os.path.exists(f):
            os.remove(f)
    if args.get("stop"):
        print(json.dumps({"stopped": True}))
    else:
        print(json.dumps({"bytes": len(data), "saw_the_store": len(data) > 100_000,
                          "found": {name: text.encode() in data for name, text in args["needles"].items()}}))
