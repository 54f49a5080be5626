"""LDAP simple binds (RFC 4511 4.2) over LDAPS to the lab's directory, made with python-ldap (the
directory's image is the only one that has it), for the checks and the benchmark.

Each step is one LDAP session: a simple bind as ``dn`` with ``password`` (both optional), then,
as that identity, an optional ``search`` ({base, attrs}) and ``modify`` ({dn, attr, value}). Each
result is the bind's verdict ("success" with the bound identity's whoami, or {error, code, info}:
python-ldap's exception name, the LDAP result code of RFC 4511 4.1.9 and the server's diagnostic
message) and the search's and modify's, where asked. The server's certificate is verified against
the lab's root. Passwords travel on stdin, never in an argv.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ..docker import docker
from ..plan import LABEL_LAB, LABEL_ROLE, Plan
from ..redact import redact
from ..topology import Host, Lab
from . import imaging as im

CA = "/etc/pacslab/tls/root.pem"  # the lab's root on every lab host (roles/pki)

# Reads {uri, steps, and ca (a file) or ca_pem (its content)} on stdin; prints one result per step.
PROBE = r"""
import json, os, sys, tempfile
import ldap

req = json.load(sys.stdin)
ca = req.get("ca")
if "ca_pem" in req:
    fd, ca = tempfile.mkstemp(suffix=".pem")
    with os.fdopen(fd, "w") as f:
        f.write(req["ca_pem"])
ldap.set_option(ldap.OPT_X_TLS_CACERTFILE, ca)
ldap.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
ldap.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)

def failure(exc):
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return {"error": type(exc).__name__, "code": info.get("result"), "info": info.get("info", "")}

out = []
for step in req["steps"]:
    con = ldap.initialize(req["uri"])
    try:
        con.simple_bind_s(step.get("dn", ""), step.get("password", ""))
    except ldap.LDAPError as exc:
        out.append({"bind": failure(exc)})
        continue
    result = {"bind": "success", "whoami": con.whoami_s()}
    if "search" in step:
        try:
            found = con.search_s(step["search"]["base"], ldap.SCOPE_SUBTREE, "(objectClass=*)", step["search"].get("attrs"))
            result["search"] = {dn: {k: sorted(v.decode() for v in vs) for k, vs in attrs.items()} for dn, attrs in found}
        except ldap.LDAPError as exc:
            result["search"] = failure(exc)
    if "modify" in step:
        m = step["modify"]
        try:
            con.modify_s(m["dn"], [(ldap.MOD_REPLACE, m["attr"], [m["value"].encode()])])
            result["modify"] = "success"
        except ldap.LDAPError as exc:
            result["modify"] = failure(exc)
    out.append(result)
    con.unbind_s()
print(json.dumps(out))
"""

INVALID = {"error": "INVALID_CREDENTIALS", "code": 49, "info": ""}  # RFC 4511 4.1.9 invalidCredentials, no message


def suffix(lab: Lab) -> str:
    """The directory's suffix (roles/directory: the lab's name under dc=pacslab)."""
    return f"dc={lab.name},dc=pacslab"


def person(suffix: str, name: str) -> str:
    """A person's DN under ``suffix`` (roles/directory: ou=people, named by uid)."""
    return f"uid={name},ou=people,{suffix}"


def bind_events(rows: Callable[..., list[dict[str, Any]]], dn: str, since: int = 0) -> list[dict[str, Any]]:
    """The siem's ldap-bind events of the binds as ``dn`` after event ``since``, oldest first.
    ``rows(*args)`` runs `pacslab-siem <args> --json` on the siem and returns its rows. slapd names
    the DN on an operation's BIND message and the verdict on its RESULT message, both under
    "conn=<n> op=<n>" (pacslab_siem.py, _slapd): each BIND message as ``dn`` is found by its text,
    then the first ldap-bind event after it whose message is that operation's RESULT."""
    found = []
    for line in rows("events", "--since-id", str(since), "--contains", f'BIND dn="{dn}" method='):
        operation = re.match(r"(conn=\d+ op=\d+) BIND ", line["message"])
        if line["source"] == "slapd" and operation:
            found += [e for e in rows("events", "--since-id", str(line["id"]), "--contains", f"{operation[1]} RESULT tag=97 ")
                      if e["event_type"] == "ldap-bind"][:1]
    return found


def uri(directory: Host) -> str:
    """The directory's LDAPS URI at its lab address (RFC 4516; the port of its lab_services ldaps)."""
    return f"ldaps://{directory.address}:{directory.service('ldaps').port}"


def steps_on(lab: Lab, directory: Host, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps from the directory host itself (its own client, to its lab address); one result per step."""
    request = {"uri": uri(directory), "ca": CA, "steps": steps}
    result: list[dict[str, Any]] = json.loads(im.exec_in(lab, directory.name, "python3", "-c", PROBE, input=json.dumps(request)))
    return result


def steps_from(lab: Lab, plan: Plan, directory: Host, source: str, steps: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    """The steps from lab host ``source``'s own address: a short-lived container of the directory's
    image (python-ldap) joins ``source``'s network namespace, as a program run on that host would,
    with no capability and nothing of the host but its network. The lab's root is read from
    ``source``. The container is labelled as the lab's (a probe its caller's death left behind goes
    with `pacslab down`). ``timeout`` in seconds. One result per step; RuntimeError when the probe
    fails, with its stderr's tail (lab secrets redacted); subprocess.TimeoutExpired past ``timeout``."""
    image = next(c.image for c in plan.containers if c.host == directory.name)
    container = lab.container_name(source)
    name = f"{container}-ldap-probe"  # named, so a probe the timeout cut is removed, not left in the host's namespace
    request = {"uri": uri(directory), "ca_pem": im.exec_in(lab, source, "cat", CA), "steps": steps}
    docker("rm", "-f", name, check=False)
    try:
        proc = docker("run", "--rm", "-i", "--name", name, "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin",
                      "--network", f"container:{container}", "--cap-drop", "ALL",
                      "--user", "nobody", "--entrypoint", "python3", image, "-c", PROBE,
                      input=json.dumps(request), check=False, timeout=timeout)
    finally:
        docker("rm", "-f", name, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the LDAP probe from {source} exited {proc.returncode}: {redact(proc.stderr.strip()[-800:])}")
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result
