"""A person at an SSH client: OpenSSH's own client on a lab host (images/client: the internet zone's
computers), driven through a pseudo-terminal as a person types, for the vendor bastion (C-MNT-01).

The client verifies the server's host key against the one the lab generated for it (given, never
learnt on first use). Keyboard-interactive prompts get what the person would type: the password at
``Password:``, the TOTP code (RFC 6238) at pam_oath's ``One-time password (OATH)`` prompt, each only
when given; a person without a code stops at the code prompt. Once the bastion's notice (tlog's,
before the recorded shell) or a shell's prompt shows, the probe gives the shell a prompt of its own
and types each command, reading its output up to the next prompt. A command may open a shell
elsewhere (``maint pacs``): the probe then waits for that shell's prompt and sets its own there too.
At the end it types ``exit`` until the client ends.

Secrets (password, code) reach the script on stdin, never in argv. Extra client options (``-L``,
``-R``, ``-D``, ``-o ...``) are the caller's; ``connect`` are local ports the probe then connects to
on the client's host, for a forwarding it asked for (SOCKS5 for a ``-D`` port): what came back, and
the client's own words about the channel are in the transcript.
"""

from __future__ import annotations

import calendar
import json
import time
from typing import Any

from .. import people
from ..topology import Lab
from . import imaging as im

STEP = 30  # seconds: RFC 6238's time step, as pam_oath's HOTP/T30/6 tokens use it

SCRIPT = r"""
import json, os, pty, re, select, socket, struct, sys, tempfile, time

req = json.load(sys.stdin)
out = {"prompts": [], "notice": False, "shell": False, "commands": [], "connect": [], "transcript": "", "status": None}
known = tempfile.NamedTemporaryFile("w", prefix="pacslab-known-", delete=False)
known.write(req["known_hosts"] + "\n")
known.close()
argv = ["ssh", "-tt", "-F", "/dev/null", "-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1",
        "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known.name, "-o", "ConnectTimeout=10",
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
    i, _ = read_until([r"[Pp]assword: ?$", r"One-time password \(OATH\) for `[^']+': ?$", re.escape(req["notice"]), r"[$#] $"], 30)
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
        return "socks reply %d" % reply[1] if len(reply) >= 2 else "closed"

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
    read_until([r"\Z\n"], 5)
try:
    os.kill(pid, 15)
except ProcessLookupError:
    pass
_, status = os.waitpid(pid, 0)
out["status"] = os.waitstatus_to_exitcode(status)
os.unlink(known.name)
print(json.dumps(out))
"""


def session(lab: Lab, from_host: str, to_host: str, user: str, *, known_host_key: str, notice: str,
            password: str | None = None, code: str | None = None, options: tuple[str, ...] = (),
            commands: tuple[str | dict[str, Any], ...] = (), connect: tuple[dict[str, Any], ...] = (),
            port: int = 22, timeout: float = 180) -> dict[str, Any]:
    """An interactive SSH session from ``from_host`` to ``to_host`` (lab hosts; by address) as
    ``user`` (see the module's docstring). ``known_host_key``: the server's public host key line
    (``ssh-ed25519 AAAA...``). ``commands``: text, or {"command", "shell": True for one that opens a
    shell elsewhere, "timeout" seconds}. ``connect``: {"port"} or {"port", "socks": [address, port]}.

    Returns {"prompts": ["password" | "code", ...] in the order met, "notice": whether the bastion's
    notice of the recording showed, "shell": whether a shell was reached, "commands": [{command,
    output, done}], "connect": [{port, outcome: "answer <text>", "closed", "socks reply <SOCKS5
    code>" or an OSError's name}], "transcript": everything the client showed, "status": its exit
    status (negative: killed by the probe, which ends a client left at a prompt)}. Raises RuntimeError when the probe itself could not run."""
    address = str(lab.hosts[to_host].address)
    request: dict[str, Any] = {
        "host": address, "port": port, "user": user, "notice": notice, "options": list(options),
        "known_hosts": f"{address} {known_host_key}",
        "commands": [c if isinstance(c, dict) else {"command": c} for c in commands], "connect": list(connect),
    }
    for key, value in (("password", password), ("code", code)):
        if value is not None:
            request[key] = value
    result: dict[str, Any] = json.loads(im.exec_in(lab, from_host, "python3", "-c", SCRIPT, input=json.dumps(request), timeout=timeout))
    return result


def fresh_code(lab: Lab, bastion: str, oath_file: str, secrets_dir: str, user: str) -> str:
    """A TOTP code for ``user`` that the bastion's pam_oath has not accepted: the current one, or,
    when the bastion already accepted the code of the current 30-second step (it refuses that code
    and any earlier one), the next step's, after waiting for it (at most 30 s). ``oath_file``: the
    bastion's users file, whose line for the person ends with the time of the last accepted code."""
    seed = people.totp_seed(secrets_dir, user)
    line = im.exec_in(lab, bastion, "awk", "-v", f"u={user}", "$2 == u { print $NF }", oath_file).strip()
    last = -1
    if line.endswith("L"):  # pam_oath's time of the last accepted code, e.g. 2026-12-01T20:01:54L (the bastion's clock, UTC)
        last = calendar.timegm(time.strptime(line[:-1], "%Y-%m-%dT%H:%M:%S")) // STEP
    while int(time.time() // STEP) <= last:
        time.sleep((last + 1) * STEP - time.time() + 0.5)
    return people.totp_now(seed)
