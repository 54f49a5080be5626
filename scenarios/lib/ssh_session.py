"""A person at an SSH client, typing: OpenSSH's own client on this host, driven through a
pseudo-terminal (pacslab.probes.ssh describes the conversation). Two callers: the checks
(pacslab.probes.ssh.session: the request as JSON on stdin) and scenario steps (pacslab.scenario:
CONTEXT; args {to: a lab host, user, real: true (the person's real password, from
CONTEXT['passwords']) or password, notice, options, connect, commands}; the host key is taken on
first use, as an attacker would). Prints one JSON object: prompts met, notice, shell, commands,
connect, the client's words about refusals ("said"), the transcript (checks only), exit status."""

import json
import os
import pty
import re
import select
import socket
import struct
import sys
import tempfile
import time

if "CONTEXT" in globals():  # a scenario step
    args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
    req = {k: v for k, v in args.items() if k in ("user", "connect", "commands", "notice")}
    # "@host" in an option is that lab host's address (-L 18022:@pacs:22): the labs of a class differ
    req["options"] = [re.sub(r"@([a-z][a-z0-9-]*)", lambda m: CONTEXT["hosts"][m.group(1)]["address"], o)  # noqa: F821
                      for o in args.get("options", [])]
    req.update(host=CONTEXT["hosts"][args["to"]]["address"], port=args.get("port", 22), known_hosts="")  # noqa: F821
    req["password"] = CONTEXT["passwords"][args["user"]] if args.get("real") else args.get("password")  # noqa: F821
    req = {k: v for k, v in req.items() if v is not None}
else:
    req = json.load(sys.stdin)
req.setdefault("options", [])
req.setdefault("connect", [])
req.setdefault("commands", [])
req["commands"] = [c if isinstance(c, dict) else {"command": c} for c in req["commands"]]
out = {"prompts": [], "notice": False, "shell": False, "commands": [], "connect": [], "transcript": "", "status": None}
known = tempfile.NamedTemporaryFile("w", prefix="pacslab-known-", delete=False)
known.write(req["known_hosts"] + "\n")
known.close()
checking = "yes" if req["known_hosts"] else "no"  # a scenario's attacker takes whatever key answers
argv = ["ssh", "-tt", "-F", "/dev/null", "-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1",
        "-o", "StrictHostKeyChecking=" + checking, "-o", "UserKnownHostsFile=" + known.name, "-o", "ConnectTimeout=10",
        "-p", str(req["port"])] + req["options"] + ["-l", req["user"], req["host"]]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "dumb"
    os.execvp(argv[0], argv)
buf = ""
PROMPT = "PACSLAB-READY$ "

def read_until(patterns, timeout):
    # the text up to and including the first match of any pattern; (index, text), (-1, text) at the
    # client's end, (None, "") after timeout seconds
    global buf
    end = time.monotonic() + timeout
    while True:
        for i, p in enumerate(patterns):
            m = re.search(p, buf)
            if m:
                seen, buf = buf[:m.end()], buf[m.end():]
                out["transcript"] += seen
                return i, seen
        left = end - time.monotonic()
        if left <= 0:
            return None, ""
        ready, _, _ = select.select([fd], [], [], left)
        try:
            chunk = os.read(fd, 4096).decode(errors="replace") if ready else ""
        except OSError:
            chunk = ""
        if ready and not chunk:
            seen, buf = buf, ""
            out["transcript"] += seen
            return -1, seen
        buf += chunk

def type_(text):
    os.write(fd, (text + "\n").encode())

def own_prompt(at_prompt=False):
    # the shell's own first prompt: from there on it reads what is typed
    if not at_prompt and read_until([r"[$#] $"], 20)[0] != 0:
        return False
    type_("PS1='PACSLAB-''READY$ '")
    return read_until([re.escape(PROMPT) + "$"], 20)[0] == 0

while True:
    i, _ = read_until([r"[Pp]assword: ?$", r"One-time password \(OATH\) for `[^']+': ?$", re.escape(req.get("notice") or "\0"), r"[$#] $"], 30)
    if i in (0, 1):
        out["prompts"].append(["password", "code"][i])
        answer = req.get(["password", "code"][i])
        if answer is None:
            break
        type_(answer)
        continue
    out["notice"] = i == 2
    out["shell"] = i in (2, 3) and own_prompt(at_prompt=i == 3)
    break

def socks5(port, host, dport):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return "socks refused"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", dport))
        reply = s.recv(10)
        return f"socks reply {reply[1]}" if len(reply) >= 2 else "closed"

if out["shell"]:
    for c in req["connect"]:
        try:
            if c.get("socks"):
                outcome = socks5(c["port"], c["socks"][0], c["socks"][1])
            else:
                with socket.create_connection(("127.0.0.1", c["port"]), timeout=10) as s:
                    s.settimeout(5)
                    data = s.recv(256)
                    outcome = "answer " + data.decode(errors="replace") if data else "closed"
        except OSError as exc:
            outcome = type(exc).__name__
        out["connect"].append({"port": c["port"], "outcome": outcome})
        read_until([r"open failed[^\n]*\n"], 5)
    for c in req["commands"]:
        type_(c["command"])
        if c.get("shell"):
            done = own_prompt()
            out["commands"].append({"command": c["command"], "output": "", "done": done})
        else:
            i, seen = read_until([re.escape(PROMPT) + "$"], c.get("timeout", 30))
            out["commands"].append({"command": c["command"], "output": seen[:-len(PROMPT)] if i == 0 else seen, "done": i == 0})
        if not out["commands"][-1]["done"]:
            break
    for _ in range(4):
        type_("exit")
        if read_until([r"\Z\n"], 10)[0] == -1:
            break
else:
    read_until([r"\Z\n"], 1)  # a client left at a prompt says nothing more
try:
    os.kill(pid, 15)
except ProcessLookupError:
    pass
_, status = os.waitpid(pid, 0)
out["status"] = os.waitstatus_to_exitcode(status)
os.unlink(known.name)
SAID = ("Permission denied", "account has expired", "administratively prohibited", "port forwarding failed", "Connection timed out",
        "Connection refused", "Host key verification failed")
out["said"] = [ln.strip() for ln in out["transcript"].replace("\r", "").splitlines() if any(p in ln for p in SAID)]
if "CONTEXT" in globals():  # a scenario's result: what a trainer compares, no transcript
    del out["transcript"]
    out["reached"] = [c["port"] for c in out["connect"] if c["outcome"].startswith("answer")]
print(json.dumps(out))
