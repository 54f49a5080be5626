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
from ..topology import REPO_ROOT, Lab
from . import imaging as im

SCRIPT = (REPO_ROOT / "scenarios" / "lib" / "ssh_session.py").read_text()


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
    status (negative: killed by the probe, which ends a client left at a prompt), "said": the client's
    lines about a refusal (PAM's and OpenSSH's words)}. Raises RuntimeError when the probe itself could not run."""
    address = str(lab.hosts[to_host].address)
    request: dict[str, Any] = {
        "host": address, "port": port, "user": user, "notice": notice, "options": list(options),
        "known_hosts": f"{address} {known_host_key}",
        "commands": list(commands), "connect": list(connect),
    }
    for key, value in (("password", password), ("code", code)):
        if value is not None:
            request[key] = value
    result: dict[str, Any] = json.loads(im.exec_in(lab, from_host, "python3", "-c", SCRIPT, input=json.dumps(request), timeout=timeout))
    return result


def fresh_code(lab: Lab, bastion: str, oath_file: str, secrets_dir: str, user: str) -> str:
    """A TOTP code for ``user`` of a later step than the last code the bastion's pam_oath accepted
    (it refuses that code and any of an earlier step), that it accepts now: people.fresh_totp, which
    waits only when the next step's code was used too. ``oath_file``: the bastion's users file,
    whose line for the person ends with the last accepted code and the time it was accepted."""
    seed = people.totp_seed(secrets_dir, user)
    fields = im.exec_in(lab, bastion, "awk", "-v", f"u={user}", "$2 == u && NF >= 7 { print $(NF-1), $NF }", oath_file).split()
    last = -1
    # e.g. 505637 2026-12-01T20:01:54L: liboath writes its local time (L), UTC in the lab's images (no TZ set)
    if len(fields) == 2 and fields[1].endswith("L"):
        last = people.step_of(seed, fields[0], calendar.timegm(time.strptime(fields[1][:-1], "%Y-%m-%dT%H:%M:%S")))
    return people.fresh_totp(seed, last)
