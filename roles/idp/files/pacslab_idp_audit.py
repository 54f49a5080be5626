#!/usr/bin/python3
"""The IdP's DICOM audit trail: DICOM User Authentication messages (PS3.15 A.5.3.12, EventID 110114,
EventTypeCode Login 110122), one per line of AUDIT_LOG, which roles/log_shipping ships to the siem
as the Orthanc hosts' audit trail. Each names the person as requestor at the browser's address and
the IdP (LemonLDAP::NG) as the node that authenticated, from the IdP as a security server;
outcome 0 for a completed sign-in, 4 for a refused one. The messages are built by roles/orthanc's
pacslab_audit.py (installed in AUDIT_LIB); the IdP's name and site come from AUDIT_CONFIG.

It has two writers:
- pacslab-totp-verify, the second factor, calls ``login`` for each verdict on a code;
- run as a program, it reads the lines of the portal's log on its standard input, as rsyslog's
  omprog hands them (roles/log_shipping, log_shipping_image_readers; confirmMessages: "OK" once
  ready and after each line), and writes a refused Login for each line in which LemonLDAP refused
  the first factor: a wrong password ("Bad password for <user> (<address>)") or a name the
  directory does not hold ("<user> was not found in LDAP directory (<address>)"), the name as
  typed. Any other line writes nothing. A message that cannot be written is an "audit-failed"
  JSON line on its standard error (omprog's output file), and the next line is read all the same.
  Its input is read as UTF-8 with each undecodable byte replaced (a line is never a reason to stop);
  should the loop fail all the same, an "audit-failed" line says the reader stopped and it exits 1:
  omprog starts it again and hands it the line it had not confirmed.
"""

import io
import json
import re
import sys
from typing import BinaryIO, TextIO

AUDIT_LOG = "/var/log/pacslab/idp-audit.log"
AUDIT_LIB = "/usr/local/lib/pacslab"
AUDIT_CONFIG = "/etc/pacslab/idp-audit.json"  # {"source": the IdP's name, "site": the lab's}

# LemonLDAP::NG 2.16's lines for a refused first factor, read from the end (its userControl keeps a
# user name to letters, digits and ._-@; the siem reads the same lines: pacslab_siem's _idp_portal).
REFUSED_FIRST_FACTOR = (re.compile(r"^\[[^\]]*\] \[LLNG:\d+\] \[\w+\] Bad password for (?P<user>.+) \((?P<address>[0-9a-fA-F.:]+)\)$"),
                        re.compile(r"^\[[^\]]*\] \[LLNG:\d+\] \[\w+\] (?P<user>.+) was not found in LDAP directory \((?P<address>[0-9a-fA-F.:]+)\)$"))


def login(user: str, address: str, accepted: bool) -> None:
    """Append the User Authentication message (Login) of ``user`` at ``address`` (an IP address,
    the browser's) to AUDIT_LOG: outcome 0 (SUCCESS) if ``accepted``, else 4 (MINOR_FAILURE).
    OSError when AUDIT_CONFIG or AUDIT_LOG cannot be read or written; ValueError without an address."""
    if AUDIT_LIB not in sys.path:
        sys.path.insert(0, AUDIT_LIB)
    import pacslab_audit as audit  # noqa: PLC0415 (roles/orthanc's, installed beside it)

    with open(AUDIT_CONFIG, encoding="utf-8") as f:
        config = json.load(f)
    node = audit.Participant(f"lemonldap@{config['source']}", address=config["source"])
    message = audit.user_authentication(True, audit.Participant(user, requestor=True, address=address),
                                        audit.Source(config["source"], config.get("site"), audit.SECURITY_SERVER),
                                        outcome=audit.SUCCESS if accepted else audit.MINOR_FAILURE, node=node)
    with open(AUDIT_LOG, "a", encoding="utf-8") as out:
        out.write(audit.line(message) + "\n")


def refused_first_factor(line: str) -> tuple[str, str] | None:
    """(user name as typed, browser's address) of a portal log line that refuses a password or an
    unknown name; None for any other line."""
    for pattern in REFUSED_FIRST_FACTOR:
        if m := pattern.match(line.strip()):
            return m["user"], m["address"]
    return None


def portal_lines(stream: BinaryIO) -> TextIO:
    """The lines omprog hands over (bytes), as text: UTF-8, each undecodable byte replaced (U+FFFD),
    a line ending at a line feed only (a carriage return inside a message is no end: one "OK" per
    message, or omprog's confirmations would run ahead of the lines)."""
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")


def main(lines: TextIO, out: TextIO, err: TextIO) -> int:
    """omprog's loop: one portal log line per input line; "OK" once ready and after each. 0 at the
    input's end; 1 after a failure outside a message's writing, said on ``err`` (audit-failed)."""
    print("OK", file=out, flush=True)
    try:
        for line in lines:
            found = refused_first_factor(line)
            if found:
                try:
                    login(*found, accepted=False)
                except Exception as exc:  # the next line is read all the same; this one says what is missing
                    print(json.dumps({"event": "audit-failed", "message": "user_authentication", "user": found[0],
                                      "error": f"{type(exc).__name__}: {exc}"}), file=err, flush=True)
            print("OK", file=out, flush=True)
    except Exception as exc:  # noqa: BLE001 (the refusals that come until omprog starts it again are not audited: said)
        print(json.dumps({"event": "audit-failed", "message": "user_authentication",
                          "error": f"the reader stopped: {type(exc).__name__}: {exc}"}), file=err, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(portal_lines(sys.stdin.buffer), sys.stdout, sys.stderr))
