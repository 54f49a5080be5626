#!/usr/bin/env python3
"""pacslab-siem: the SIEM's event store, its detections and its alerts and cases (C-PRT-01,
C-DET-06, C-RSP-01). Python's standard library, and Jinja2 for the console's pages alone: it runs on
the siem host (roles/siem) and is imported by the unit tests, which run the same rules over fixtures.

Commands:
  ingest     rsyslog's omprog hands it one JSON object per line (the template of roles/siem); each is
             normalised into one row of the ``events`` table and acknowledged with "OK" (omprog's
             confirmMessages), so rsyslog keeps what was not stored and hands it again.
  evaluate   every few seconds, runs each detection (Sigma rules compiled to SQLite by pySigma on the
             controller, pacslab/detections.py) over the recent events; each result opens or updates
             an alert, and each alert opens or updates the case of the host it is about (of the
             person, for an alert that names only a person).
  alerts, cases, events, containment, captures   print them (``--json`` for machines).
  window     an alert's span and the addresses it is about, for a capture around it (C-RSP-03).
  record-capture   records a retrieved capture (file name, SHA-256, packets) in the alert's case.
  authorise  opens (or, with --end ID, closes) a window of authorised activity for its addresses: an
             alert is raised as usual but contains nobody when what no window covers does not fire
             the rule on its own (a scheduled scan, the lab's own segmentation check, beside a
             stray packet of the host's ordinary traffic).
  maintenance   open (a vendor, minutes, a reason), end or list the vendors' maintenance windows
             (C-DET-08): a vendor's sign-in is stored with the window that covers it, or with
             "outside-window" when none does (what the rule vendor-outside-window alerts on).
  serve      the containment decisions over HTTPS (GET /containment), to the fw only (mutual TLS,
             the fw's anchor alone trusted), which applies each once (roles/firewall).
  console    the analysts' pages over HTTPS (the lab's certificate; the fw lets the clinical zone
             reach it, F16, and the security zone's hosts reach it inside their zone, F16b): / the
             newest alerts, cases and containment decisions, /alerts/<id> one alert, the events
             behind it and the captures around it. Read only; Jinja2 renders them, every value
             escaped (an AE title or a user name is whatever a sender put in a log).

Containment (C-RSP-02): when a high or critical rule that names a ``containment`` entity raises a
new alert, the siem decides to quarantine that entity's address (a lab host's, or one no host has
inside a lab zone: a rogue device), unless it is in no lab zone, a zone's network, broadcast or
bridge address, the fw's, a planned host's, a critical asset's, or a bastion's for sign-ins it relayed (a person decides: the
maintained hosts' sshd name the bastion's address for every vendor's sign-in), in a zone a quarantined host keeps (assets.json
"spared_zones"), or authorised; a withheld decision is kept with its reason. An alert that goes on after the fw released its host (the
release is shipped here) decides again (a sequence, when what came after the release forms it on its own); a withheld decision stands
for the alert's life.

The normalised event (one schema for every source): time (UTC, ISO 8601), host (the lab host that
sent it, from the TLS connection's address; sender_host is what its syslog header said), source
(the program), event_type, user, src_ip, src_port, dst_ip, dst_port, proto, calling_ae, called_ae,
patient_id, study_uid, outcome, message (the raw syslog message), signature_id and signature (the
IDS rule that raised an alert: its sid and its msg); and, from the lab definition, src_host (the lab
host that has src_ip, planned or deployed; none: no host has it) and src_zone (the lab zone whose
subnet holds src_ip; none: outside every zone); and maintenance, on a vendor's sign-in only (a
person whose roles hold "vendor", assets.json "vendors"): "window N" for the maintenance window
open for that vendor at the sign-in's time, else "outside-window"; and action, on a DICOM audit
message only: its EventActionCode (C, R, U, D or E: A.5.1).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.server
import ipaddress
import json
import re
import socket
import sqlite3
import ssl
import sys
import time
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

STORE = Path("/var/lib/pacslab-siem/events.sqlite")
RULES = Path("/etc/pacslab/siem/rules.json")
ASSETS = Path("/etc/pacslab/siem/assets.json")

FIELDS = ("time", "host", "sender_host", "source", "event_type", "user", "src_ip", "src_port", "dst_ip", "dst_port", "proto",
          "calling_ae", "called_ae", "patient_id", "study_uid", "outcome", "message", "src_host", "src_zone", "signature_id", "signature",
          "maintenance", "action", "shift", "program")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  {", ".join(f"{f} TEXT" for f in FIELDS)},
  received TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_type ON events(event_type);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  rule_id TEXT NOT NULL, rule TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL,
  entities TEXT NOT NULL,      -- JSON object: the rule's group-by fields and their values
  events TEXT NOT NULL,        -- JSON array of event ids behind the alert
  first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, raised TEXT NOT NULL, updated TEXT NOT NULL,
  case_id INTEGER
);
CREATE TABLE IF NOT EXISTS containment (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  alert_id INTEGER NOT NULL,   -- one decision per alert, and another when it goes on after a release
  address TEXT, host TEXT,
  upto INTEGER NOT NULL,       -- the newest event behind the decision (events are numbered as they arrive)
  decision TEXT NOT NULL,      -- quarantine | withheld
  reason TEXT NOT NULL,        -- the rule, or why the decision was withheld
  decided TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS authorised (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  addresses TEXT NOT NULL,     -- JSON array of addresses; empty: any address
  starts TEXT NOT NULL, ends TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS maintenance (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user TEXT NOT NULL,          -- the vendor's user name (assets.json "vendors")
  starts TEXT NOT NULL, ends TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS captures (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  alert_id INTEGER NOT NULL, case_id INTEGER,
  file TEXT NOT NULL, sha256 TEXT NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
  starts TEXT NOT NULL, ends TEXT NOT NULL,
  complete INTEGER NOT NULL,   -- 0: the fw's ring no longer held the start of the span
  recorded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host TEXT NOT NULL,          -- the lab host the alerts are about, or the address when no lab host has it; '' for a person's case
  status TEXT NOT NULL DEFAULT 'open',
  severity TEXT NOT NULL,
  owner TEXT, zone TEXT, criticality TEXT, address TEXT,
  opened TEXT NOT NULL, updated TEXT NOT NULL,
  person TEXT                  -- the person the alerts are about when they name no host or address (bulk-access)
);
"""
# Columns added to a table after a store was first made: (table, column, type).
ADDED_COLUMNS = (("cases", "person", "TEXT"),)

SEVERITY = {"informational": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path: Path = STORE) -> sqlite3.Connection:
    """The store, created on first use. WAL: ingest writes while evaluate and the CLI read."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    if _missing_columns(db):  # a store from before a field: its columns are added, its earlier rows have none
        db.execute("BEGIN IMMEDIATE")  # the ingest and the evaluator start together: one of them adds
        try:
            for table, column, kind in _missing_columns(db):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return db


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(table, column, type) of each column of FIELDS and ADDED_COLUMNS the store lacks."""
    wanted = [("events", f, "TEXT") for f in FIELDS] + list(ADDED_COLUMNS)
    present = {t: {row[1] for row in db.execute(f"PRAGMA table_info({t})")} for t in {t for t, _, _ in wanted}}
    return [(t, c, k) for t, c, k in wanted if c not in present[t]]


# ---------------------------------------------------------------------------------------------
# Normalisation: one syslog message (rsyslog's JSON template) -> one event row


# OpenSSH's sshd (auth.c): the lines that end an authentication attempt. The user name is what the
# client sent and may hold spaces or a forged "from"; the address and port are what sshd appends,
# so they are read from the end of the line, after which only sshd's own words may come: the key
# a publickey sign-in used (its type and SHA256 fingerprint: a maintained host's sshd, roles/maintenance).
_SSHD_AUTH = re.compile(r"^(?P<verdict>Accepted|Failed) (?P<method>\S+) for (?:invalid user )?(?P<user>.*) "
                        r"from (?P<ip>[0-9a-fA-F.:]+) port (?P<port>\d+)(?: ssh2(?:: [A-Z0-9-]+ SHA256:[A-Za-z0-9+/]+)?)?(?: \[preauth\])?$")
_SSHD_INVALID = re.compile(r"^Invalid user (?P<user>.*) from (?P<ip>[0-9a-fA-F.:]+) port (?P<port>\d+)(?: \[preauth\])?$")


# A carriage return as the sender's rsyslog writes a control character it read (#ooo, octal).
CR_ESCAPED = "#015"

# The name a log source's rsyslog gives a message its own rules found written under another
# program's name (roles/bastion: sshd's verdict on a sign-in from any user but root, forged-sshd).
FORGED_PREFIX = "forged-"

# sudo's line (sudoers' "Defaults logfile" with log_year and log_host on a maintained host,
# roles/maintenance; its syslog message on the bastion): "[<Mon dd hh:mm:ss yyyy> : ]<user> :
# [<why refused> ; ][HOST=<host> ; ][TTY=<tty> ; ]PWD=<dir> ; USER=<run as> ; COMMAND=<command line>"
# (no TTY= without a terminal: `setsid sudo ...`). The person and the verdict come before anything
# the person chose (the directory, the command's arguments), so neither can be forged from the
# command line, and sudo 1.9 writes a control character there as #ooo (a newline #012): one use is
# one line. The command is the rest of the line.
_SUDO = re.compile(r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?: \d{4})? : )?(?P<user>[^\s:;]+) : (?:(?P<refused>[^;=]+?) ; )?"
                   r"(?:HOST=\S+ ; )?(?:TTY=\S+ ; )?(?:CHROOT=\S+ ; )?PWD=.*? ; USER=(?P<run_as>\S+) ; (?:GROUP=\S+ ; )?(?:ENV=.*? ; )?"
                   r"COMMAND=(?P<command>.*)$")


def _sudo(msg: str) -> dict[str, Any]:
    """A use of sudo: event sudo-command, its user the person who asked, its outcome "allowed" or
    sudo's reason for the refusal in dashes ("command-not-allowed", "3-incorrect-password-attempts").
    Any other line of sudo's (a PAM session's) is left as it is."""
    m = _SUDO.match(msg)
    if m is None:
        return {}
    refused = m["refused"]
    return {"event_type": "sudo-command", "user": m["user"],
            "outcome": "allowed" if refused is None else "-".join(refused.strip().lower().split())}


def _json_object(msg: str) -> dict[str, Any]:
    """The JSON object a message holds; {} for one that is not JSON, or JSON but no object (or
    nested deeper than the parser recurses)."""
    try:
        data = json.loads(msg)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(connections: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Keep ``value`` as the newest open connection under ``key`` (a number reused starts over); beyond
    ``limit`` connections, the oldest is forgotten (a flood of them cannot grow the ingest's memory)."""
    connections.pop(key, None)
    connections[key] = value
    while len(connections) > limit:
        connections.pop(next(iter(connections)))


def _text(data: dict[str, Any], key: str, number: bool = False) -> str | None:
    """A JSON record's field as the text of an event column: a non-empty string, or with ``number``
    an integer written out (a port); None for anything else (absent, empty, true/false, a list, an object)."""
    value = data.get(key)
    kinds = (str, int) if number else (str,)
    return str(value) if isinstance(value, kinds) and not isinstance(value, bool) and str(value) else None


def normalise(record: dict[str, Any], assets: dict[str, Any], connections: dict[tuple[str, ...], tuple[str, str]] | None = None,
              ldap_connections: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The event row for one message. ``record`` has rsyslog's properties: time (RFC 3339),
    fromhost_ip (the TLS peer's address; the siem's own for its own watch's records, which its rsyslog
    reads from their file), hostname (the sender's syslog header), programname, msg.
    ``assets`` maps a lab address to its host (assets.json). ``connections`` and ``ldap_connections``:
    what the ingest remembers across messages, a TLS front's open connections (_stunnel) and the
    directory's (_slapd), each bounded on its own. Unknown shapes are kept
    as event_type "syslog" with their raw message: nothing is dropped."""
    msg = str(record.get("msg", "")).strip(" \t\r\n")  # ASCII only: sshd's words behind a no-break space are not sshd's
    peer = str(record.get("fromhost_ip", ""))
    event: dict[str, Any] = {f: None for f in FIELDS}
    sender = assets.get("addresses", {}).get(peer, {})
    event.update(time=_utc(str(record.get("time", ""))), host=sender.get("host", peer),
                 sender_host=record.get("hostname"), source=record.get("programname"), event_type="syslog", message=msg)
    source = event["source"]
    if str(source).startswith(FORGED_PREFIX):
        event.update(event_type="forged-source")  # the sender's own rsyslog found it was not its program's
    elif source == "sshd":
        line = msg.removesuffix(CR_ESCAPED)  # sshd -E (a maintained host, roles/maintenance) ends its lines CR LF
        m = _SSHD_AUTH.match(line)
        if m:
            ok = m["verdict"] == "Accepted"
            event.update(event_type="ssh-login-success" if ok else "ssh-login-failure", outcome="success" if ok else "failure",
                         user=m["user"], src_ip=m["ip"], src_port=m["port"], proto="tcp", dst_ip=peer)
        elif m := _SSHD_INVALID.match(line):
            event.update(event_type="ssh-invalid-user", outcome="failure", user=m["user"], src_ip=m["ip"], src_port=m["port"],
                         proto="tcp", dst_ip=peer)
    elif source == "sudo":
        event.update(_sudo(msg))
    elif source in PROGRAM_IMAGES and sender.get("image") not in PROGRAM_IMAGES[source]:
        event.update(event_type="forged-source")  # e.g. `logger -t orthanc-events` in a vendor's shell on the bastion
    elif source in PROGRAM_GROUPS and not set(PROGRAM_GROUPS[source]) & set(sender.get("groups", [])):
        event.update(event_type="forged-source")  # the RIS's words from the PACS, which has the RIS's image
    elif source == "fw-drops":
        event.update(_fw_drop(msg))
    elif source == "fw-response":
        event.update(_fw_response(msg))
    elif source == "orthanc-events":
        event.update(_orthanc_event(msg))
    elif source == "orthanc-log":
        event.update(_orthanc_log(msg, assets, peer))
    elif source == "dicom-audit":
        event.update(_dicom_audit(msg))
    elif source == "hids":
        event.update(_hids(msg))
    elif source in SUPERVISION_PROGRAMS:
        event.update(_supervision(msg))
    elif source == "suricata":
        event.update(_eve(msg))
    elif source == "discovery":
        event.update(_discovery(msg))
    elif source == "vulnscan":
        event.update(_vulnscan(msg))
    elif source == "idp-portal-reader":
        event.update(_audit_failed(_json_object(msg), peer))
    elif source in IDP_PROGRAMS:
        event.update(_idp_portal(msg, peer))
    elif source in RPROXY_PROGRAMS:
        event.update(_rproxy_access(msg, peer, str(source)))
    elif source in RIS_PROGRAMS:
        event.update(_hl7_orders(msg, peer))
    elif source in DICOM_NODE_PROGRAMS:
        event.update(_dicom_node(msg, assets, peer))
    elif source in DICOM_WIRE_PROGRAMS:
        event.update(_dicom_wire(msg, assets))
    elif source in STUNNEL_PROGRAMS:
        event.update(_stunnel(msg, peer, str(source), {} if connections is None else connections))
    elif source == "slapd":
        event.update(_slapd(msg, peer, {} if ldap_connections is None else ldap_connections))
    elif source in CA_PROGRAMS:
        event.update(_ca_event(msg, assets))
    elif source == "tlog":
        data = _json_object(msg)
        if "user" in data:
            event.update(event_type="vendor-session", user=data.get("user"), outcome="recorded")
    if event["src_ip"]:
        event.update(_whose(str(event["src_ip"]), assets))
        if event["event_type"] == "ldap-bind" and set(RELAYING_GROUPS) & set(assets.get("addresses", {}).get(event["src_ip"], {}).get("groups", [])):
            event["action"] = "relayed"
    return event


def _whose(address: str, assets: dict[str, Any]) -> dict[str, Any]:
    """src_host and src_zone of a source address (assets.json: "addresses", "zones" {name: subnet})."""
    asset = assets.get("addresses", {}).get(address) or {}
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {"src_host": None, "src_zone": None}
    zone = next((name for name, subnet in sorted(assets.get("zones", {}).items()) if ip in ipaddress.ip_network(subnet, strict=False)), None)
    return {"src_host": asset.get("host"), "src_zone": asset.get("zone") or zone}


# The IdP's portal log (roles/idp: LemonLDAP::NG's output and its TOTP checker's, shipped as
# idp-portal by roles/log_shipping), from a host whose image is the IdP's only. A sign-in is a
# password, then a code (RFC 6238):
# - LemonLDAP's "[<time>] [LLNG:<pid>] [warn] Bad password for <user> (<address>)": the password
#   refused, also a locked person's (idp-login-failure, outcome bad-password); "<user> was not found
#   in LDAP directory (<address>)": nobody has that name (outcome unknown-user). The address is read
#   from the end of the line (LemonLDAP's userControl keeps a user name to letters, digits, ._-@);
# - pacslab-totp-verify's {"event": "totp", "user", "src_ip", "verdict"}: "accepted" completes the
#   sign-in (idp-login-success); "refused: <why>" is an idp-login-failure whose outcome says why
#   (wrong-code, code-already-used, no-seed ...);
# - {"event": "audit-failed", "message", "error"[, "user"]}: a DICOM audit message the checker, or
#   the IdP's reader of these lines (roles/idp's pacslab_idp_audit.py, its own output shipped as
#   idp-portal-reader), could not write (audit-failed: the message's kind as the outcome, the person
#   it was about as the user).
# Any other line of the portal stays "syslog", with its raw message.
IDP_PROGRAMS = ("idp-portal", "idp-portal-reader")
_LLNG_BAD_PASSWORD = re.compile(r"^\[[^\]]*\] \[LLNG:\d+\] \[\w+\] Bad password for (?P<user>.+) \((?P<ip>[0-9a-fA-F.:]+)\)$")
_LLNG_UNKNOWN_USER = re.compile(r"^\[[^\]]*\] \[LLNG:\d+\] \[\w+\] (?P<user>.+) was not found in LDAP directory \((?P<ip>[0-9a-fA-F.:]+)\)$")


def _idp_portal(msg: str, peer: str) -> dict[str, Any]:
    for pattern, outcome in ((_LLNG_BAD_PASSWORD, "bad-password"), (_LLNG_UNKNOWN_USER, "unknown-user")):
        if m := pattern.match(msg):
            return {"event_type": "idp-login-failure", "outcome": outcome, "user": m["user"], "src_ip": m["ip"], "dst_ip": peer,
                    "proto": "https"}
    data = _json_object(msg)
    if data.get("event") == "audit-failed":
        return _audit_failed(data, peer)
    if data.get("event") != "totp" or not isinstance(data.get("verdict"), str):
        return {}
    accepted = data["verdict"] == "accepted"
    return {"event_type": "idp-login-success" if accepted else "idp-login-failure",
            "outcome": "success" if accepted else data["verdict"].removeprefix("refused:").strip().replace(" ", "-"),
            "user": data.get("user") or None, "src_ip": data.get("src_ip") or None, "dst_ip": peer, "proto": "https"}


def _audit_failed(data: dict[str, Any], peer: str) -> dict[str, Any]:
    """An IdP writer's {"event": "audit-failed", "message", "error"[, "user"]}; {} for any other line
    (the reader's output holds nothing else a writer of the lab wrote)."""
    if data.get("event") != "audit-failed":
        return {}
    return {"event_type": "audit-failed", "outcome": data.get("message") if isinstance(data.get("message"), str) else None,
            "user": data.get("user") if isinstance(data.get("user"), str) else None, "dst_ip": peer}


# The reverse proxy's access logs (roles/rproxy: Apache's LogFormat pacslab_access, shipped by
# roles/log_shipping), from a host whose image is the proxy's only: one line per request,
# `<client> <TLS> "<method> <path> <protocol>" <status> user=<person> roles=<roles>`. Apache escapes
# a quote in the path as \", so the fields after it are read from the end of the line.
# - rproxy-access, the proxy's own site: the person and roles from the IdP's ID token ("-" before
#   sign-in); 401 and 403 are proxy-access-denied, any other status proxy-request;
# - rproxy-idp-access, the IdP it passes through to hosts that may not reach it directly (no
#   person: the IdP logs who signs in): proxy-idp-request, whatever the IdP answered.
# The status is the outcome.
RPROXY_PROGRAMS = ("rproxy-access", "rproxy-idp-access")
_RPROXY_ACCESS = re.compile(r'^(?P<ip>[0-9a-fA-F.:]+) (?P<tls>\S+) "(?P<method>[A-Z]+) (?P<path>.*) (?P<protocol>HTTP/[0-9.]+)" '
                            r"(?P<status>\d{3}) user=(?P<user>\S*) roles=(?P<roles>\S*)$")


def _rproxy_access(msg: str, peer: str, source: str) -> dict[str, Any]:
    m = _RPROXY_ACCESS.match(msg)
    if not m:
        return {}
    kind = "proxy-idp-request" if source == "rproxy-idp-access" else "proxy-access-denied" if m["status"] in ("401", "403") else "proxy-request"
    return {"event_type": kind, "outcome": m["status"],
            "user": None if m["user"] in ("", "-") else m["user"], "src_ip": m["ip"], "dst_ip": peer, "proto": "https"}


# The directory's slapd (roles/directory: OpenLDAP 2.5 at olcLogLevel stats, through syslog(3); its
# rsyslog ships them as slapd, from the directory's image only; a control character a client sent,
# a line feed in a DN, arrives escaped as #012 inside its one message): "conn=<n> <text>", one
# connection's messages under its number. Its address is on its first, "fd=<n> ACCEPT from
# IP=<address>:<port> (IP=<ours>:<port>)" (ldap-connection; a local client's "PATH=" has none, and is
# no TCP); "op=<n> BIND dn="<DN>" method=<n>" names the DN an operation binds as (method 128: simple,
# 163: SASL), a SASL bind's "op=<n> BIND dn="<DN>" mech=<mech> ..." the identity it authenticated, and
# that operation's "RESULT tag=97 err=<n> ... text=<text>" is the bind's verdict (ldap-bind: outcome
# success, anonymous for a simple bind with no DN, invalid-credentials for err=49, else err-<n>;
# user the DN's first uid= or cn= value, else the whole DN, none when its BIND message never came).
# "fd=<n> closed", with a reason or not, ends the connection. The DN is read from the end of its
# message, so a DN holding a quote cannot pose as the method. A bind from a host of RELAYING_GROUPS
# is marked action "relayed": the IdP binds as a person to check the password typed at its portal,
# so its address stands for every browser; the portal's own log names the browser (idp-portal).
SLAPD_PROGRAMS = ("slapd",)
_SLAPD = re.compile(r"^conn=(?P<conn>\d+) (?P<text>.*)$")
_SLAPD_ACCEPT = re.compile(r"^fd=\d+ ACCEPT from (?:IP=\[?(?P<ip>[0-9a-fA-F.:]+?)\]?:(?P<port>\d+)|PATH=\S*) \(")
_SLAPD_BIND = re.compile(r'^op=(?P<op>\d+) BIND dn="(?P<dn>.*)" method=(?P<method>\d+)$')
_SLAPD_BOUND = re.compile(r'^op=(?P<op>\d+) BIND dn="(?P<dn>.*)" mech=\S+ bind_ssf=\d+ ssf=\d+$')
_SLAPD_CLOSED = re.compile(r"^fd=\d+ closed(?: \(.*\))?$")
_SLAPD_RESULT = re.compile(r"^op=(?P<op>\d+) RESULT tag=97 err=(?P<err>\d+) ")
_SLAPD_USER = re.compile(r"^(?:uid|cn)=(?P<name>(?:[^,+\\]|\\.)+)", re.IGNORECASE)
LDAP_RESULTS = {"0": "success", "49": "invalid-credentials"}
SIMPLE_BIND = "128"  # RFC 4511 4.2: the AuthenticationChoice simple [0], as slapd logs its tag
LDAP_CONNECTIONS = 4096  # open directory connections remembered at most (beyond, the oldest is forgotten)
RELAYING_GROUPS = ("idp_servers",)


def _slapd(msg: str, peer: str, connections: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The fields of one of slapd's messages (above); ``connections`` is what the ingest remembers of
    each open connection ((peer, number) -> {ip, port, ops: {operation: [DN, method]}})."""
    line = _SLAPD.match(msg)
    if not line:
        return {}
    key, text = (peer, line["conn"]), line["text"]
    if m := _SLAPD_ACCEPT.match(text):
        _remember(connections, key, {"ip": m["ip"], "port": m["port"], "ops": {}}, LDAP_CONNECTIONS)
        return {"event_type": "ldap-connection", "outcome": "accepted", "src_ip": m["ip"], "src_port": m["port"],
                "proto": "tcp" if m["ip"] else None, "dst_ip": peer}
    known = connections.get(key, {"ip": None, "port": None, "ops": {}})
    if m := _SLAPD_BIND.match(text):
        if key in connections:
            known["ops"][m["op"]] = [m["dn"], m["method"]]
        return {}
    if m := _SLAPD_BOUND.match(text):
        if m["op"] in known["ops"]:
            known["ops"][m["op"]][0] = m["dn"]  # the identity a SASL bind authenticated
        return {}
    if _SLAPD_CLOSED.match(text):
        connections.pop(key, None)
        return {}
    if m := _SLAPD_RESULT.match(text):
        dn, method = known["ops"].pop(m["op"], [None, None])
        name = _SLAPD_USER.match(dn or "")
        anonymous = m["err"] == "0" and dn == "" and method == SIMPLE_BIND
        return {"event_type": "ldap-bind", "outcome": "anonymous" if anonymous else LDAP_RESULTS.get(m["err"], f"err-{m['err']}"),
                "user": name["name"] if name else (dn or None), "src_ip": known["ip"], "src_port": known["port"],
                "proto": "tcp" if known["ip"] else None, "dst_ip": peer}
    return {}


# The lab's DICOM simulator on a modality, the legacy device or a reading workstation (pacslab/dicomsim.py,
# roles/dicom_node), shipped as dicom-node: Python's logging lines ("2026-12-05 22:52:27,956 dicomsim
# INFO text"). Its records are one JSON object each (dicomsim.record): "acquired" (a worklist item
# acquired and sent to the PACS: accession, patient_id, study_uid, calling_ae, the association's
# outcome, the instances stored, failed and left unacknowledged) and "received" (an instance a
# workstation's storage SCP took: sop_instance_uid, study_uid, patient_id, calling_ae, src_ip),
# "association-received" and "association-rejected" (each association request the storage SCP
# received, and each it rejected with its PS3.8 reason: calling_ae, called_ae, src_ip; the same
# events and outcomes as Orthanc's lines on the PACS, _orthanc_log, so that unknown-ae and
# dicom-access-denied read both; an association accepted under a lab title from an address not its
# host's is "lab-ae-from-another-address", which the SCP, checking titles only, cannot refuse and
# dicom-ae-impersonation reads). An acquisition is "stored" only when the PACS took every instance
# and at least one; else "incomplete". Any other line keeps its level as the outcome (dicom-node-log).
DICOM_NODE_PROGRAMS = ("dicom-node",)


def _lab_title(calling_ae: str | None, assets: dict[str, Any], fold_case: bool = False) -> str | None:
    """The host of the lab definition whose AE title ``calling_ae`` is (assets.json "ae_titles",
    C-AST-05), else None. ``fold_case``: compared without case, as Orthanc compares; pynetdicom's
    SCP and the wire compare exactly (PS3.5 AE: only leading and trailing spaces are not significant)."""
    titles = assets.get("ae_titles", {})
    if calling_ae is None:
        return None
    if fold_case:
        return next((str(host) for ae, host in titles.items() if str(ae).upper() == calling_ae.upper()), None)
    return str(titles[calling_ae]) if calling_ae in titles else None


def _from_owner(owner: str, address: str | None, assets: dict[str, Any]) -> str:
    """The outcome of an association a DICOM node accepted under the AE title of the lab host
    ``owner``, from ``address``: "lab-ae" from the owner's own address, "lab-ae-from-another-address"
    from any other (another device calling itself by the owner's title: dicom-ae-impersonation),
    "lab-ae-address-unknown" when the record names no one address (neither can be told)."""
    if address is None:
        return "lab-ae-address-unknown"
    return "lab-ae" if (assets.get("addresses", {}).get(address) or {}).get("host") == owner else "lab-ae-from-another-address"


_DICOMSIM = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ dicomsim (?P<level>[A-Z]+) (?P<text>.*)$")
# A-ASSOCIATE-RJ reason (dicomsim's spelling of PS3.8 Table 9-21) -> the outcome Orthanc's lines get for it
_NODE_REJECTIONS = {"calling-AE-title-not-recognized": "calling-ae-not-allowed", "called-AE-title-not-recognized": "called-ae-not-recognised"}


def _dicom_node(msg: str, assets: dict[str, Any], peer: str) -> dict[str, Any]:
    """The fields of one line of a DICOM node's log (above); {} for a line of another shape."""
    line = _DICOMSIM.match(msg)
    if not line:
        return {}
    data = _json_object(line["text"]) if line["level"] == "INFO" else {}
    found = {"patient_id": _text(data, "patient_id"), "study_uid": _text(data, "study_uid"), "calling_ae": _text(data, "calling_ae"),
             "proto": "dicom"}
    if data.get("event") in ("association-received", "association-rejected"):
        calling, received, source = found["calling_ae"], data["event"] == "association-received", _text(data, "src_ip")
        owner = _lab_title(calling, assets)
        outcome = ("unknown-calling-ae" if owner is None else _from_owner(owner, source, assets) if received
                   else _NODE_REJECTIONS.get(_text(data, "reason") or "", _text(data, "reason") or "rejected"))
        return found | {"event_type": "dicom-association-received" if received else "dicom-association-rejected", "outcome": outcome,
                        "called_ae": _text(data, "called_ae"), "src_ip": source, "dst_ip": peer}
    if data.get("event") == "acquired":
        counts = [data.get(k) for k in ("stored", "failed", "unacknowledged")]
        whole = all(isinstance(c, int) and not isinstance(c, bool) for c in counts) and counts[0] > 0 and counts[1] == counts[2] == 0
        return found | {"event_type": "modality-acquisition", "outcome": "stored" if whole else "incomplete"}
    if data.get("event") == "received":
        return found | {"event_type": "dicom-instance-received", "outcome": "stored", "src_ip": _text(data, "src_ip")}
    return {"event_type": "dicom-node-log", "outcome": line["level"].lower()}


# The overlay gateway's view of the cleartext legacy segment (roles/dicom_node, gateway mode), shipped
# as dicom-wire: tshark's EK output (Wireshark's DICOM dissector, fields named with "_" for "."),
# one {"timestamp", "layers": {field: [value]}} per A-ASSOCIATE-RQ a device sent to one of the
# gateway's tunnels (its index lines, {"index": ...}, are no record). A dicom-association-received
# event, as Orthanc's line for an association, with the device's own address (the PACS sees the
# gateway's) and the gateway's as the destination: "unknown-calling-ae" when no host of the lab
# definition has the calling AE title, "lab-ae" when the address is that host's, else
# "lab-ae-from-another-address" (a device calling itself by another's title, which the PACS, seeing
# the gateway's address, cannot tell). The address is the packet's source as the segment carried it:
# a device there could forge it. The time is the packet's.
DICOM_WIRE_PROGRAMS = ("dicom-wire",)


def _dicom_wire(msg: str, assets: dict[str, Any]) -> dict[str, Any]:
    """The fields of one line of the gateway's DICOM capture (above); {} for a line of another shape."""
    layers = _json_object(msg).get("layers")
    if not isinstance(layers, dict):
        return {}

    def one(field: str) -> str | None:
        values = layers.get(field)
        value = values[0] if isinstance(values, list) and len(values) == 1 else None
        return value.strip() or None if isinstance(value, str) else None

    def port(field: str) -> int | None:
        value = one(field)
        return int(value) if value is not None and value.isascii() and value.isdecimal() and int(value) < 65536 else None

    calling, source = one("dicom_assoc_ae_calling"), one("ip_src")
    owner = _lab_title(calling, assets)
    found: dict[str, Any] = {"event_type": "dicom-association-received", "proto": "dicom", "calling_ae": calling,
                             "called_ae": one("dicom_assoc_ae_called"), "src_ip": source, "src_port": port("tcp_srcport"),
                             "dst_ip": one("ip_dst"), "dst_port": port("tcp_dstport"),
                             "outcome": "unknown-calling-ae" if owner is None else _from_owner(owner, source, assets)}
    try:
        found["time"] = _from_epoch(one("frame_time_epoch"))
    except (TypeError, ValueError, OverflowError, OSError):
        pass  # no packet time: the event keeps the time the siem received it
    return found


# The lab CA's event log (pacslab/ca.py JOURNAL, shipped as ca-events by roles/log_shipping), from a
# host whose image is the CA's only: one JSON object per change, {"time", "event", "name", ...}. The
# time is the CA's own (its event log is read from its start: rsyslogd may ship a line minutes after
# it was written). A certificate's node is the event's destination (dst_ip, its lab address; none for
# the root, nor for the fw, which has one in each zone), its serials and names stay in the raw message. event -> event_type, outcome:
# certificate-issued -> certificate-issued, "valid", action "renewal" when it supersedes a certificate
# of the node, else "enrolment" (or "expired", no action: issued already expired, for a negative check);
# certificate-revoked -> certificate-revoked, "revoked"; re-enrolment -> certificate-re-enrolment,
# "allowed" (the node may enrol again, with a new issuer); root-created -> ca-root-created, "created".
CA_PROGRAMS = ("ca-events",)
CA_EVENTS = {"certificate-issued": "certificate-issued", "certificate-revoked": "certificate-revoked",
             "re-enrolment": "certificate-re-enrolment", "root-created": "ca-root-created"}
CA_OUTCOMES = {"certificate-revoked": "revoked", "re-enrolment": "allowed", "root-created": "created"}


def _ca_event(msg: str, assets: dict[str, Any]) -> dict[str, Any]:
    data = _json_object(msg)
    kind = data.get("event")
    if kind not in CA_EVENTS or not isinstance(data.get("name"), str):
        return {}
    found: dict[str, Any] = {"event_type": CA_EVENTS[kind], "outcome": CA_OUTCOMES.get(kind)}
    if kind == "certificate-issued":
        expired = data.get("expired") is True  # nothing is enrolled by it: no node's trust changes
        found.update(outcome="expired" if expired else "valid", action=None if expired else "renewal" if data.get("replaces") else "enrolment")
    if kind != "root-created":
        found["dst_ip"] = (assets.get("hosts", {}).get(data["name"]) or {}).get("address") or None
    if isinstance(data.get("time"), str):
        found["time"] = _utc(data["time"])
    return found


# Programs only an Orthanc host's plugin writes (its image "orthanc" in assets.json): the same tag
# from any other host is stored as "forged-source", never read as the PACS's word.
ORTHANC_PROGRAMS = ("orthanc-events", "dicom-audit", "orthanc-log", "hids")


# The Orthanc hosts' own watch (roles/orthanc, files/pacslab_hids.py), shipped as hids: one JSON
# object per line, its kind in "event" - unexpected-exec (a process whose executable no package of
# the image installed, or altered; "reason" says which), unexpected-listener (a listener outside
# loopback the lab definition does not give the host: "proto", "port"), hids-started. The user is
# the process's owner; the executable, its SHA-256 and the command line stay in the raw message.
def _hids(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if not isinstance(data.get("event"), str):
        return {}
    port = data.get("port")
    return {"event_type": data["event"], "user": data.get("user") if isinstance(data.get("user"), str) else None,
            "proto": data.get("proto") if isinstance(data.get("proto"), str) else None,
            "dst_port": port if isinstance(port, int) and not isinstance(port, bool) else None,
            "outcome": data.get("reason") if isinstance(data.get("reason"), str) else None}


SUPERVISION_PROGRAMS = ("supervision",)
SUPERVISION_EVENTS = ("program-down", "program-up", "supervision-started", "supervision-alive", "supervision-failed")


# Every log source's watch over its supervised programs, and the siem's own (roles/log_shipping,
# files/pacslab_supervision.py), shipped as supervision from any host (each speaks of its own
# programs only: the host is the TLS peer's, or the siem's for the records its rsyslog reads itself): one JSON object per line, its kind in "event" -
# program-down (a program supervisor should run has not been RUNNING for the listener's grace:
# "state" is supervisor's state name, or REMOVED: no longer loaded), program-up (it runs
# again), supervision-started, supervision-alive (its heartbeat, every 15 s by default: Silences reads it),
# supervision-failed. The program is supervisor's name of it; the outcome its state, in lower case.
def _supervision(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if data.get("event") not in SUPERVISION_EVENTS:
        return {}
    state = _text(data, "state")
    return {"event_type": data["event"], "program": _text(data, "program"), "outcome": state.lower() if state else None}


# The lab plugin's event log on the PACS and the VNA (roles/orthanc, files/pacslab_orthanc.py): one
# JSON object per line, its kind in "event". Its fields map onto the schema; the kind is the
# event_type as the plugin names it (integrity-failure, invalid-uid-refused, access-decision, ...);
# an audit-failed event's outcome is the kind of audit message it could not write; an
# access-decision's is its verdict, or "refused-to-all" where the request is one the PACS refuses
# to every account (its permission: a deletion no audit message could name, roles/orthanc's
# orthanc_refused_rules).
def _orthanc_event(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if not isinstance(data.get("event"), str):
        return {}
    verdict = "refused-to-all" if data["event"] == "access-decision" and data.get("permission") == "refused-to-all" else data.get("verdict")
    status = data.get("status")
    kind = data.get("message") if data["event"] == "audit-failed" else None  # the audit message it could not write
    return {"event_type": data["event"], "user": data.get("user") or None, "calling_ae": data.get("calling_ae"),
            "study_uid": data.get("study_uid") or data.get("held_study_uid"),
            "outcome": verdict if isinstance(verdict, str) else status if isinstance(status, str) else kind if isinstance(kind, str) else None}


# Orthanc's own log (glog, run with --verbose-dicom: "W1202 11:13:52.397176 CommandDispatcher.cpp:617]
# text", a category such as "(dicom) " before some texts), shipped as orthanc-log. The lines about
# DICOM access (Orthanc 1.10.1's wording, seen on the lab):
# - "Association Received from AET <AE> on IP <ip>": every association, before it is accepted or
#   not (dicom-association-received);
# - "Rejected association for remote AET <AE> on IP <ip>": A-ASSOCIATE-RJ, calling AE title not
#   recognised (PS3.8 9.3.4): not in DicomModalities, or not from its registered address;
# - "Rejected association, because of a bad called AET in the request (<AE>)": called AE title not
#   recognised (the line names no source: the association's Received line before it does);
# - "DICOM authorization rejected for AET <AE> on IP <ip>: The DICOM command Find is not allowed
#   ...": a request the AE title may not make, answered with an A-ABORT (dicom-request-rejected,
#   the DIMSE service as the outcome).
# An AE title has at most 16 characters, so the address is read from the end of what Orthanc wrote.
# A calling AE title that no host of the lab definition has (assets.json "ae_titles", C-AST-05)
# makes the outcome "unknown-calling-ae". Any other line keeps its level as the outcome.
_GLOG = re.compile(r"^(?P<level>[IWEF])\d{4} [\d:.]+ (?:\d+ )?\S+:\d+\] (?:\([a-z]+\) )?(?P<text>.*)$")
_ASSOCIATION_RQ = re.compile(r"^Association Received from AET (?P<ae>.*) on IP (?P<ip>[0-9a-fA-F.:]+)$")
_ASSOCIATION_RJ = re.compile(r"^Rejected association for remote AET (?P<ae>.*) on IP (?P<ip>[0-9a-fA-F.:]+)$")
_CALLED_RJ = re.compile(r"^Rejected association, because of a bad called AET in the request \((?P<ae>.*)\)$")
_REQUEST_RJ = re.compile(r"^DICOM authorization rejected for AET (?P<ae>.*) on IP (?P<ip>[0-9a-fA-F.:]+): "
                         r"(?:The DICOM command (?P<command>\S+) is not allowed|This AET is not listed)")
GLOG_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "fatal"}
DIMSE = {"Echo": "C-ECHO", "Find": "C-FIND", "FindWorklist": "C-FIND", "Get": "C-GET", "Move": "C-MOVE", "Store": "C-STORE"}


def _orthanc_log(msg: str, assets: dict[str, Any], peer: str) -> dict[str, Any]:
    line = _GLOG.match(msg)
    if not line:
        return {}
    text = line["text"]
    if m := _ASSOCIATION_RQ.match(text) or _ASSOCIATION_RJ.match(text):
        received = text.startswith("Association Received")
        known = _lab_title(m["ae"], assets, fold_case=True) is not None  # Orthanc compares without case
        return {"event_type": "dicom-association-received" if received else "dicom-association-rejected", "calling_ae": m["ae"],
                "src_ip": m["ip"], "dst_ip": peer, "proto": "dicom",
                "outcome": "unknown-calling-ae" if not known else "lab-ae" if received else "calling-ae-not-allowed"}
    if m := _CALLED_RJ.match(text):
        return {"event_type": "dicom-association-rejected", "called_ae": m["ae"], "dst_ip": peer, "proto": "dicom",
                "outcome": "called-ae-not-recognised"}
    if m := _REQUEST_RJ.match(text):
        return {"event_type": "dicom-request-rejected", "calling_ae": m["ae"], "src_ip": m["ip"], "dst_ip": peer, "proto": "dicom",
                "outcome": "unknown-calling-ae" if _lab_title(m["ae"], assets, fold_case=True) is None
                else DIMSE.get(m["command"] or "", m["command"] or "not-listed")}
    return {"event_type": "orthanc-log", "outcome": GLOG_LEVELS[line["level"]]}


# The fw's logs (roles/firewall, images/fw), sent only by a host whose image is the fw's:
# - fw-drops: ulogd2's JSON line for each packet the ruleset drops or rejects; the log prefix
#   ("pacslab deny ", "pacslab quarantine " ...) says why, kept as the outcome (deny, quarantine ...).
#   The time is the kernel's (oob.time.sec and .usec, UTC); ulogd's "timestamp" has no zone.
# - fw-response: pacslab-quarantine's line for each quarantine and release (containment-quarantine,
#   containment-release), the person or program that asked as the user.
FW_PROGRAMS = ("fw-drops", "fw-response")
IP_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp"}


def _fw_drop(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if not str(data.get("oob.prefix", "")).startswith("pacslab "):
        return {}
    found: dict[str, Any] = {"event_type": "fw-drop", "outcome": str(data["oob.prefix"]).removeprefix("pacslab ").strip(),
                             "src_ip": data.get("src_ip"), "dst_ip": data.get("dest_ip"), "src_port": data.get("src_port"),
                             "dst_port": data.get("dest_port"), "proto": IP_PROTOCOLS.get(data.get("ip.protocol"), data.get("ip.protocol"))}
    if isinstance(data.get("oob.time.sec"), int):
        found["time"] = _from_epoch(data["oob.time.sec"] + int(data.get("oob.time.usec") or 0) / 1e6)
    return found


def _fw_response(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if data.get("action") not in ("quarantine", "release"):
        return {}
    return {"event_type": f"containment-{data['action']}", "user": data.get("by"), "dst_ip": data.get("address"),
            "outcome": "changed" if data.get("changed") else "unchanged"}


# DICOM audit messages (PS3.15 A.5) from the PACS and the VNA (roles/orthanc's pacslab_audit.py):
# the EventID names the event type; the requestor (UserIsRequestor, else the first participant)
# gives user, address and AE title; the Study (ID type 110180) and Patient (ID type 2) objects
# give study_uid and patient_id; EventOutcomeIndicator the outcome. ElementTree with Debian's
# expat 2.5 refuses entity-expansion bombs and never fetches external entities.
DICOM_AUDIT_EVENTS = {"110100": "dicom-audit-application-activity", "110102": "dicom-audit-begin-transferring",
                      "110103": "dicom-audit-instances-accessed", "110104": "dicom-audit-instances-transferred",
                      "110105": "dicom-audit-study-deleted", "110112": "dicom-audit-query", "110113": "dicom-audit-security-alert",
                      "110114": "dicom-audit-user-authentication"}
OUTCOMES = {"0": "success", "4": "minor-failure", "8": "serious-failure", "12": "major-failure"}


def _dicom_audit(msg: str) -> dict[str, Any]:
    try:
        root = ElementTree.fromstring(msg.lstrip("\ufeff"))
    except (ElementTree.ParseError, ValueError):
        return {}
    ident = root.find("EventIdentification")
    event_id = ident.find("EventID") if ident is not None else None
    if root.tag != "AuditMessage" or ident is None or event_id is None:
        return {}
    code = event_id.get("csd-code") or ""
    people = root.findall("ActiveParticipant")
    who = next((p for p in people if p.get("UserIsRequestor") in ("true", "1")), people[0] if people else None)  # xsd:boolean
    if code == "110113" and len(people) > 1:  # a Security Alert's first participant reports it: the event is about who performed it
        who = people[1]
    found: dict[str, Any] = {"event_type": DICOM_AUDIT_EVENTS.get(code, f"dicom-audit-{code}"), "action": ident.get("EventActionCode"),
                             "outcome": OUTCOMES.get(ident.get("EventOutcomeIndicator", ""), ident.get("EventOutcomeIndicator"))}
    if who is not None:
        found["user"] = who.get("UserID")
        if who.get("NetworkAccessPointTypeCode") == "2":
            found["src_ip"] = who.get("NetworkAccessPointID")
        titles = who.get("AlternativeUserID", "")
        if titles.startswith("AETITLES="):
            found["calling_ae"] = titles.removeprefix("AETITLES=").split(";")[0]
    for obj in root.findall("ParticipantObjectIdentification"):
        id_type = obj.find("ParticipantObjectIDTypeCode")
        kind = id_type.get("csd-code") if id_type is not None else None
        if kind == "110180" and "study_uid" not in found:
            found["study_uid"] = obj.get("ParticipantObjectID")
        elif kind == "2" and "patient_id" not in found:
            found["patient_id"] = obj.get("ParticipantObjectID")
    return found


# Suricata's EVE JSON on the IDS sensor (roles/sensor), one record per line, shipped as suricata and
# read only from a host whose image is the sensor's: an alert (ids-alert: the rule's sid and msg,
# its action as the outcome: "allowed" in IDS mode, it watches), a TLS handshake (ids-tls: the
# version as the outcome) and an anomaly (ids-anomaly: malformed or unexpected protocol data, the
# anomaly's event as the outcome). The time is Suricata's (the packet's), the addresses the flow's.
SENSOR_PROGRAMS = ("suricata",)
EVE_TYPES = {"alert": "ids-alert", "tls": "ids-tls", "anomaly": "ids-anomaly"}


def _eve(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if data.get("event_type") not in EVE_TYPES:
        return {}
    found: dict[str, Any] = {"event_type": EVE_TYPES[data["event_type"]], "src_ip": data.get("src_ip"), "dst_ip": data.get("dest_ip"),
                             "src_port": data.get("src_port"), "dst_port": data.get("dest_port"),
                             "proto": str(data["proto"]).lower() if data.get("proto") else None}
    if isinstance(data.get("timestamp"), str):
        found["time"] = _utc(data["timestamp"])
    detail = data.get(data["event_type"])
    if not isinstance(detail, dict):
        return found
    if data["event_type"] == "alert":
        found.update(outcome=detail.get("action"), signature=detail.get("signature"),
                     signature_id=str(detail["signature_id"]) if detail.get("signature_id") is not None else None)
    elif data["event_type"] == "tls":
        found["outcome"] = detail.get("version")
    else:
        found["outcome"] = detail.get("event")
    return found


# The scanner's sweeps (roles/scanner, files/pacslab_discovery.py), read only from a host whose image
# is the scanner's: each address that answered (discovered-address: the address as src_ip, nmap's
# reason as the outcome; the siem adds the host and zone the lab definition gives the address, no
# host for a device nobody registered) and each zone's end of a sweep (discovery-sweep, "finished"
# with the zone's addresses in the message, or "failed" with nmap's word). The time is the scanner's.
SCANNER_PROGRAMS = ("discovery", "vulnscan")
DISCOVERY_KINDS = {"host-up": "discovered-address", "sweep-finished": "discovery-sweep", "sweep-failed": "discovery-sweep"}


def _discovery(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    if data.get("event") not in DISCOVERY_KINDS:
        return {}
    found: dict[str, Any] = {"event_type": DISCOVERY_KINDS[data["event"]]}
    if isinstance(data.get("time"), str):
        found["time"] = _utc(data["time"])
    if data["event"] == "host-up":
        found.update(src_ip=str(data.get("address") or "") or None, outcome=data.get("reason"))
    else:
        found["outcome"] = "finished" if data["event"] == "sweep-finished" else "failed"
    return found


# The scanner's vulnerability scans (roles/scanner pacslab-vulnscan, shipped as vulnscan), from a
# host of the scanner's image only: each open port of a scanned host (vuln-service, the service's
# name as the outcome), each weakness of one (vuln-finding, the finding as the outcome:
# tls-below-1.2, weak-cipher, tls-not-graded), each with the scanned host's address as src_ip (the event is about
# it: the siem adds its host and zone) and the port as dst_port; and each zone's end of a scan
# (vuln-scan, "finished" with the hosts in the message, or "failed" with nmap's word). The time is
# the scanner's.
VULNSCAN_KINDS = {"vuln-service": "vuln-service", "vuln-finding": "vuln-finding", "vuln-scan-finished": "vuln-scan",
                  "vuln-scan-failed": "vuln-scan"}


def _vulnscan(msg: str) -> dict[str, Any]:
    data = _json_object(msg)
    kind = data.get("event")
    if kind not in VULNSCAN_KINDS:
        return {}
    found: dict[str, Any] = {"event_type": VULNSCAN_KINDS[kind]}
    if isinstance(data.get("time"), str):
        found["time"] = _utc(data["time"])
    if kind in ("vuln-service", "vuln-finding"):
        found.update(src_ip=str(data.get("address") or "") or None, dst_port=str(data.get("port") or "") or None, proto=data.get("proto"),
                     outcome=data.get("finding") if kind == "vuln-finding" else data.get("service"))
    else:
        found["outcome"] = "finished" if kind == "vuln-scan-finished" else "failed"
    return found


# The RIS's HL7 order listener's record (pacslab/orders.py ``audit``, roles/ris; shipped as hl7-orders
# by roles/log_shipping), from a host of group ris_servers only: one JSON object per message it
# answered, with the sending station's address and port as its TLS front saw them (src_ip, src_port):
# - "order-scheduled" (hl7-order-scheduled, outcome AA), one per order, with its patient_id and the
#   study_uid its worklist item carries;
# - "message-refused" (hl7-message-refused, outcome "<MSA-1>-<HL7 table 0357 code>", e.g. AE-102):
#   no patient, nothing of a refused message is taken as true;
# - "connection-refused" (hl7-connection-refused, outcome its reason: "not-the-front", a local
#   process of another user than the front's, or "no-proxy-header"): a stream not from the front.
RIS_PROGRAMS = ("hl7-orders",)
HL7_REFUSALS = ("not-the-front", "no-proxy-header")
_HL7_EVENTS = {"order-scheduled": "hl7-order-scheduled", "message-refused": "hl7-message-refused",
               "connection-refused": "hl7-connection-refused"}


def _hl7_orders(msg: str, peer: str) -> dict[str, Any]:
    data = _json_object(msg)
    kind = _HL7_EVENTS.get(str(data.get("event")))
    if kind is None:
        return {}
    found = {"event_type": kind, "src_ip": _text(data, "src_ip"), "src_port": _text(data, "src_port", number=True), "dst_ip": peer, "proto": "tcp"}
    if kind == "hl7-order-scheduled":
        return found | {"outcome": "AA", "patient_id": _text(data, "patient_id"), "study_uid": _text(data, "study_uid")}
    if kind == "hl7-message-refused":
        return found | {"outcome": f"{_text(data, 'ack')}-{_text(data, 'code', number=True)}"}
    reason = _text(data, "reason") or "no-proxy-header"  # a record of before the front's user was checked has none: no header, then
    return found | {"outcome": reason if reason in HL7_REFUSALS else "refused"}


# A TLS front's log (stunnel 5 in front of the PACS's and the VNA's DICOM port, roles/orthanc; shipped
# as dicom-front by roles/log_shipping; and in front of the RIS's HL7 listener, roles/ris, shipped as
# hl7-front): "<date> LOG<level>[<connection>]: <text>", one connection's
# lines under its number. Its address is on its first line only, "Service [<name>] accepted
# connection from <address>:<port>" (tls-connection); the later ones take it from there:
# "Certificate accepted at depth=0: <subject>" (tls-client-certificate, user: the subject's CN,
# the lab host the certificate names), "Rejected by CERT at DEPTH=<n>: <subject>" (the same, outcome
# rejected), "SSL_accept: <where>: error:<code>:SSL routines::<reason>" (tls-handshake-refused,
# outcome: OpenSSL's reason, e.g. unsupported-protocol for TLS below 1.2, or
# peer-did-not-return-a-certificate). A line that begins "Connection closed" or "Connection reset" ends it.
# The legacy zone's overlay gateway (stunnel 5 as a TLS client, roles/dicom_node, shipped as
# overlay-gateway) writes the same lines of the devices that open its tunnels; there the certificate
# it accepts is its TLS peer's, the PACS's or the RIS's (tls-server-certificate), and its allow-list
# refuses a device no lab host's peers send through it: "Service [<tunnel>] REFUSED by libwrap from
# <address>:<port>" (tls-connection, outcome refused).
STUNNEL_PROGRAMS = ("dicom-front", "hl7-front", "overlay-gateway")
STUNNEL_CLIENTS = ("overlay-gateway",)  # the programs whose stunnel is the TLS client: the certificate it checks is the server's
_STUNNEL = re.compile(r"^\d{4}\.\d\d\.\d\d \d\d:\d\d:\d\d LOG\d\[(?P<conn>[^\]]+)\]: (?P<text>.*)$")
_STUNNEL_ACCEPTED = re.compile(r"^Service \[[^\]]+\] accepted connection from (?P<ip>[0-9a-fA-F.:]+):(?P<port>\d+)$")
_STUNNEL_CERT = re.compile(r"^(?:Certificate accepted at depth=0|Rejected by CERT at DEPTH=(?P<depth>\d+)): (?P<subject>.*)$")
_STUNNEL_REFUSED = re.compile(r"^SSL_accept: (?:.*?error:[0-9A-Fa-f]+:[^:]*:[^:]*:)?(?P<reason>[^:]+)$")
_STUNNEL_LIBWRAP = re.compile(r"^Service \[[^\]]+\] REFUSED by libwrap from (?P<ip>[0-9a-fA-F.:]+):(?P<port>\d+)$")
STUNNEL_CONNECTIONS = 4096  # open connections remembered at most (beyond, the oldest is forgotten)


def _stunnel(msg: str, peer: str, source: str, connections: dict[tuple[str, ...], tuple[str, str]]) -> dict[str, Any]:
    line = _STUNNEL.match(msg)
    if not line:
        return {}
    key, text = (peer, source, line["conn"]), line["text"]
    if m := _STUNNEL_ACCEPTED.match(text):
        _remember(connections, key, (m["ip"], m["port"]), STUNNEL_CONNECTIONS)
        return {"event_type": "tls-connection", "outcome": "accepted", "src_ip": m["ip"], "src_port": m["port"], "proto": "tcp", "dst_ip": peer}
    if m := _STUNNEL_LIBWRAP.match(text):
        return {"event_type": "tls-connection", "outcome": "refused", "src_ip": m["ip"], "src_port": m["port"], "proto": "tcp", "dst_ip": peer}
    address = connections.get(key, (None, None))
    found = {"src_ip": address[0], "src_port": address[1], "proto": "tcp", "dst_ip": peer}
    if m := _STUNNEL_CERT.match(text):
        name = next((part.strip()[3:] for part in m["subject"].split(",") if part.strip().startswith("CN=")), None)
        kind = "tls-server-certificate" if source in STUNNEL_CLIENTS else "tls-client-certificate"
        return found | {"event_type": kind, "outcome": "rejected" if m["depth"] else "accepted", "user": name}
    if m := _STUNNEL_REFUSED.match(text):
        return found | {"event_type": "tls-handshake-refused", "outcome": re.sub(r"[^a-z0-9]+", "-", m["reason"].strip().lower()).strip("-")}
    if text.startswith(("Connection closed", "Connection reset")):
        connections.pop(key, None)
    return {}


# Program name -> the images of the only hosts whose word it is: from any other host it is stored as
# "forged-source" (each source's program names are beside its parser above).
# The DICOM audit trail (dicom-audit) is the Orthanc hosts' and the IdP's (its User Authentication
# messages, roles/idp's pacslab-totp-verify).
PROGRAM_IMAGES = {program: (image,) for programs, image in (
    (ORTHANC_PROGRAMS, "orthanc"), (FW_PROGRAMS, "fw"), (SENSOR_PROGRAMS, "sensor"), (SCANNER_PROGRAMS, "scanner"), (IDP_PROGRAMS, "idp"),
    (RPROXY_PROGRAMS, "rproxy"), (("dicom-front",), "orthanc"), (SLAPD_PROGRAMS, "dir"),
    (DICOM_NODE_PROGRAMS, "dicom"), (("overlay-gateway", *DICOM_WIRE_PROGRAMS), "dicom"), (CA_PROGRAMS, "ca"))
    for program in programs} | {"dicom-audit": ("orthanc", "idp")}
# Program name -> the groups (assets.json "groups") of the only hosts whose word it is, for a program
# whose image other hosts have too: the RIS's HL7 listener and front (the RIS is an Orthanc host);
# the DICOM simulator's log, a modality's or a reading workstation's (the legacy zone's TLS gateway
# has the dicom image too, and runs no simulator); the tunnels' log, the overlay gateway's only.
PROGRAM_GROUPS = {program: ("ris_servers",) for program in (*RIS_PROGRAMS, "hl7-front")} | {
    program: ("modalities", "workstations") for program in DICOM_NODE_PROGRAMS} | {
    program: ("overlay_gateways",) for program in ("overlay-gateway", *DICOM_WIRE_PROGRAMS)}


# Passive discovery (C-AST-01): how far back `discovery` looks for addresses the fw, the sensor and the
# TLS fronts and tunnels saw in a lab zone that no host of the lab definition has, as
# rules/devices.yml's fw_drop_unknown_source, sensor_unknown_source and tls_unknown_source read them
# (a spoofed source and addresses outside every zone are none),
# but for the internet zone, the outside world, whose strangers are no gap in the hospital's inventory.
SEEN_WITHIN = timedelta(hours=1)
_SEEN = """SELECT src_ip, src_zone, source, MIN(time), MAX(time), COUNT(*) FROM events
WHERE time >= ? AND src_host IS NULL AND src_ip IS NOT NULL AND src_zone IS NOT NULL AND src_zone != 'internet'
  AND ((source = 'fw-drops' AND event_type = 'fw-drop' AND outcome IS NOT 'spoof')
       OR (source = 'suricata' AND event_type IN ('ids-tls', 'ids-alert', 'ids-anomaly'))
       OR (source IN ('dicom-front', 'hl7-front', 'overlay-gateway') AND event_type = 'tls-connection'))
GROUP BY src_ip, src_zone, source"""


def seen_unknown(db: sqlite3.Connection, at: datetime | None = None) -> list[dict[str, Any]]:
    """Passive discovery: each address the fw dropped, the IDS sensor recorded or a TLS front or the
    overlay gateway logged a connection of, in SEEN_WITHIN before ``at`` (default now), that lies in
    a lab zone (not the internet) and no lab host has:
    [{address, zone, seen_by: {source: events}, first, last}] (RFC 3339 UTC), sorted by zone and address."""
    since = ((at or datetime.now(UTC)) - SEEN_WITHIN).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for address, zone, source, first, last, count in db.execute(_SEEN, (since,)):
        row = found.setdefault((zone, address), {"address": address, "zone": zone, "seen_by": {}, "first": first, "last": last})
        row["seen_by"][source] = count
        row["first"], row["last"] = min(row["first"], first), max(row["last"], last)
    return [found[k] for k in sorted(found)]


def discovery(db: sqlite3.Connection) -> dict[str, Any]:
    """What the scanner's newest sweeps found (C-AST-01): {"zones": {zone: {round, started,
    finished, subnet, exclude [addresses not tried], up [addresses], nmap, scanner}}, "failed": the newest failed sweep {round,
    time, zones, error, scanner} or None, "seen": seen_unknown}. Read from the newest 1,000 sweep records."""
    zones: dict[str, Any] = {}
    failed = None
    rows = db.execute("SELECT host, message FROM events WHERE event_type = 'discovery-sweep' AND source = 'discovery' ORDER BY id DESC LIMIT 1000")
    for host, message in rows:
        try:
            data = json.loads(message)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if data.get("event") == "sweep-failed" and failed is None:
            failed = {k: data.get(k) for k in ("round", "time", "zones", "error")} | {"scanner": host}
        elif data.get("event") == "sweep-finished" and isinstance(data.get("zone"), str) and data["zone"] not in zones:
            zones[data["zone"]] = {"round": data.get("round"), "started": data.get("started"), "finished": data.get("time"),
                                   "subnet": data.get("subnet"), "exclude": [str(a) for a in data.get("exclude") or []],
                                   "up": [str(a) for a in data.get("up") or []], "nmap": data.get("nmap"), "scanner": host}
    return {"zones": zones, "failed": failed, "seen": seen_unknown(db)}


def _utc(stamp: str) -> str:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return now()
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def store(db: sqlite3.Connection, event: dict[str, Any]) -> int:
    """One event row; a field a sender filled with a list or an object is kept as its JSON text."""
    values = [v if v is None or isinstance(v, (str, int, float)) else json.dumps(v) for v in (event.get(f) for f in FIELDS)]
    cur = db.execute(f"INSERT INTO events ({', '.join(FIELDS)}, received) VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
                     values + [now()])
    return int(cur.lastrowid or 0)


# The CA's event log is read from its first line (roles/log_shipping, from_start): a new CA container
# ships all of it again, each line with a later syslog time. Each
# of its lines is unique (the CA's own time, the change, the node and serials), and its event takes
# the CA's time (_ca_event), so one already stored from the CA is confirmed and not stored twice. A
# line without a time of the CA's (none is written so) would take the syslog time and be stored
# again. The same line from another host is forged-source, stored.
REPLAYED_PROGRAMS = CA_PROGRAMS


def _replayed(db: sqlite3.Connection, event: dict[str, Any]) -> bool:
    return event["source"] in REPLAYED_PROGRAMS and event["event_type"] != "forged-source" and db.execute(
        "SELECT 1 FROM events WHERE time = ? AND host = ? AND source = ? AND message = ? LIMIT 1",
        (event["time"], event["host"], event["source"], event["message"])).fetchone() is not None


def ingest(lines: Any, out: Any, db: sqlite3.Connection, assets: dict[str, Any]) -> None:
    """omprog's protocol (rsyslog 8.2302, confirmMessages="on"): "OK" once ready, then one line per
    message once it is stored; a line that is not a JSON object is stored as it came (event_type
    "unparsed") and confirmed, never dropped. A line of the CA's event log stored already (the same
    time, host and message) is confirmed and not stored again (REPLAYED_PROGRAMS)."""
    print("OK", file=out, flush=True)
    connections: dict[tuple[str, ...], tuple[str, str]] = {}
    ldap_connections: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
            event = normalise(record, assets, connections, ldap_connections) if isinstance(record, dict) else None
        except Exception:  # a line or a message no parser here expected: kept as it came, never the ingest's end
            event = None
        if event is None:
            event = {f: None for f in FIELDS} | {"time": now(), "event_type": "unparsed", "message": line.rstrip("\n")}
        elif _replayed(db, event):
            print("OK", file=out, flush=True)
            continue
        else:
            event["maintenance"] = in_maintenance(db, event, assets)
        event["shift"] = shift(event, assets)
        store(db, event)
        print("OK", file=out, flush=True)


# ---------------------------------------------------------------------------------------------
# Detections: the compiled rules over the recent events


def evaluate(db: sqlite3.Connection, rules: list[dict[str, Any]], assets: dict[str, Any], at: datetime | None = None) -> list[int]:
    """Run every rule once over the events of its look-back window and raise or update alerts;
    returns the ids of the alerts raised or updated. The look-back is a correlation's timespan plus
    a minute for late arrivals, 10 minutes for a rule that alerts per event; a pass sees the events
    stored before it began (later ones, the next pass), through the view temp.logs (_refresh_window,
    _show_window). Raises sqlite3.Error, with nothing evaluated and the look-back as it was, when
    the look-back cannot be brought up to date (the store or its temp store failed). A rule is a dict of
    pacslab/detections.py: id, name, title, level, kind ("event" or a Sigma correlation type),
    timespan (seconds), group_by (fields), sql (pySigma's SQLite query over the relation ``logs``),
    base_sql (an event_count or value_count correlation's base rules as one query: the siem counts
    those itself, _counting_windows) and steps (a temporal or temporal_ordered correlation's rules:
    the siem finds the sequences itself, _sequences). A rule that fails is reported on stderr and
    the others still run."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    touched: list[int] = []
    if rules:  # sqlite3.Error: nothing evaluated, the look-back as it was
        _refresh_window(db, at - timedelta(seconds=max(_look_back(r) for r in rules)))
    shown = None  # the look-back temp.logs shows: rules with the same one share it (in look-back order)
    for rule in sorted(rules, key=_look_back):
        try:
            if _look_back(rule) != shown:
                shown = None
                _show_window(db, at - timedelta(seconds=_look_back(rule)))
                shown = _look_back(rule)
            touched += _evaluate_rule(db, rule, assets)
        except Exception as exc:  # noqa: BLE001 (one rule's failure must not stop the others, nor the loop)
            print(f"pacslab-siem evaluate: rule {rule.get('name')}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    return touched


# Log sources fallen silent (C-PRT-01, SP 800-53 AU-5). Every source's watch over its programs
# (roles/log_shipping, pacslab-supervision) writes a heartbeat (supervision-alive, every 15 s by default); its
# records stop when the listener, the host's shipping, its supervisord or the host itself stops, or
# when its messages no longer reach the siem. The detections then store an event of their own about
# the source (its host; source pacslab-siem), which rules/supervision.yml's log-source-silent reads.
# The siem's ingest stalled (AU-5 of the siem itself): no other host's record stored (the siem's own
# are read from its own files); the detections, which read the store directly, say so while it
# lasts (ingest-stalled), where the siem's own watch's record of its stopped rsyslogd can only
# arrive once rsyslogd runs again.
SILENT, RESUMED = "log-source-silent", "log-source-resumed"
STALLED, FED_AGAIN = "ingest-stalled", "ingest-resumed"
OWN_SOURCE = "pacslab-siem"  # the source of the events the siem writes itself (silences, maintenance windows)
# The watch's records that show it at work (a supervision-failed one does not: its look at supervisor failed).
HEARTBEAT_TYPES = ("supervision-alive", "supervision-started", "program-down", "program-up")
# Seconds a healthy lab's ingest may go without another host's record beyond one heartbeat: the
# watch beats on supervisor's 5 s tick (pacslab_supervision), and 2 s for the way to the store.
HEARTBEAT_SLACK = 7
_OUTCOMES = {SILENT: "silent", RESUMED: "resumed after", STALLED: "stalled", FED_AGAIN: "resumed after"}


class Silences:
    """What the detections know of the sources' watches between two passes (``listen``): the newest
    event id read, how far the ingest has got (``progress``: the newest sender's time among the
    sources' messages stored, the siem's own left out), when each source's watch was last heard (its newest record's time),
    and the sources declared silent. Times are the senders' (syslog TIMESTAMP): the lab's containers
    share one clock. A source is silent when the ingest has got ``silent_after`` seconds past its
    last record: an ingest running behind delays every source alike and calls none silent, nor does
    a siem that takes nothing at all. A source is judged once the store has heard its watch (one
    whose shipping never worked is the deployment checks' to find), and from no earlier than
    ``started``, the detections' own start: a siem that was down, or a store a snapshot put back, is
    no source's silence.

    The ingest itself (``fed``: when it last stored a record of another host than the siem, the
    store's ``received`` time, the siem's own clock; the detections' own events left out) stalls
    once it has stored none for ``silent_after`` seconds: more than two heartbeats of any source's
    watch (pacslab.topology checks the lab definition for that). The siem's own records do not
    count: read from its own files, they reach the store while its listener takes nothing. It is
    judged once the store holds another host's record, and from no earlier than ``started``. An
    ingest that stored no other host's record for longer than half of ``silent_after`` and than a
    heartbeat and HEARTBEAT_SLACK (a gap no healthy lab leaves, assets "heartbeat") is a siem that
    was not listening: the sources are judged again from when it stored one again, or those whose
    senders took a few seconds longer to send again than the first would be called silent for the
    siem's own outage. In a lab whose sources all stop at once (one source alone, say), the stall
    is the siem's to say: no source's silence is told from its ingest's."""

    def __init__(self, db: sqlite3.Connection, started: datetime) -> None:
        self.started = started
        self.progress = started
        self.last_id = int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        marks = ", ".join("?" * len(HEARTBEAT_TYPES))
        self.heard = {str(host): _parse(at) for host, at in db.execute(
            f"SELECT host, MAX(time) FROM events WHERE event_type IN ({marks}) AND source = ? GROUP BY host",
            (*HEARTBEAT_TYPES, SUPERVISION_PROGRAMS[0])) if at}
        # each source silent now, with when it was declared so and when it was last heard before
        # (SQLite takes the bare columns from the row that gave MAX(id): each source's newest of the two)
        self.silent = {str(host): (_parse(at), _parse(json.loads(message)["last_heard"])) for host, kind, at, message, _ in db.execute(
            "SELECT host, event_type, time, message, MAX(id) FROM events WHERE event_type IN (?, ?) AND source = ? GROUP BY host",
            (SILENT, RESUMED, OWN_SOURCE)) if kind == SILENT}
        # when the ingest last stored another host's record (read at the first pass, which knows the
        # siem's own name), and a stall declared and not yet over
        self.fed: datetime | None = None
        self.fed_read = False
        said = db.execute("SELECT event_type, time, message FROM events WHERE event_type IN (?, ?) AND source = ? ORDER BY id DESC LIMIT 1",
                          (STALLED, FED_AGAIN, OWN_SOURCE)).fetchone()
        self.stalled: tuple[datetime, datetime] | None = (
            (_parse(said[1]), _parse(json.loads(said[2])["last_heard"])) if said and said[0] == STALLED else None)

    def listen(self, db: sqlite3.Connection, assets: dict[str, Any], at: datetime) -> list[int]:
        """Read what was stored since the last call; then store log-source-silent about each source
        of assets["watches"] whose watch the ingest has got assets["silent_after"] seconds past,
        and log-source-resumed about a silent one heard again since. ``at``: now, which caps the
        ingest's progress (a sender's clock ahead of the siem's). Returns the ids of the events stored."""
        top = int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        window = (self.last_id, top)
        after = float(assets.get("silent_after") or 0)
        stored = self._ingest(db, window, assets.get("self"), after, float(assets.get("heartbeat") or 0), at) if after > 0 else []
        # not the siem's own records (its watch's, read from its own file at once and stamped when
        # read): after an outage of its rsyslogd they would move the ingest to now before the
        # sources' backlogs arrive, and call every source silent
        newest = db.execute("SELECT MAX(time) FROM events WHERE id > ? AND id <= ? AND source IS NOT ? AND host IS NOT ?",
                            (*window, OWN_SOURCE, assets.get("self"))).fetchone()[0]
        if newest:
            self.progress = max(self.progress, min(_parse(newest), at))
        marks = ", ".join("?" * len(HEARTBEAT_TYPES))
        for host, time_ in db.execute(f"SELECT host, MAX(time) FROM events WHERE id > ? AND id <= ? AND source = ? "
                                      f"AND event_type IN ({marks}) GROUP BY host", (*window, SUPERVISION_PROGRAMS[0], *HEARTBEAT_TYPES)):
            if time_ and (str(host) not in self.heard or _parse(time_) > self.heard[str(host)]):
                self.heard[str(host)] = _parse(time_)
        self.last_id = top
        for host in assets.get("watches", []) if after > 0 else []:
            heard = self.heard.get(host)
            if heard is None:
                continue
            if host in self.silent:
                declared, before = self.silent[host]
                if heard > declared:  # a record written after the silence was declared: it lasted from the one before
                    stored.append(self._own(db, RESUMED, host, before, (heard - before).total_seconds(), after, at))
                    del self.silent[host]
                continue
            quiet = (self.progress - max(heard, self.started)).total_seconds()
            if quiet > after:
                stored.append(self._own(db, SILENT, host, heard, quiet, after, at))
                self.silent[host] = (at, heard)
        return stored

    def _ingest(self, db: sqlite3.Connection, window: tuple[int, int], siem: str | None, after: float, beat: float,
                at: datetime) -> list[int]:
        """Read when the ingest stored the other hosts' records of ``window`` (ids after, up to; the
        siem's own, ``siem``, are read from its own files and reach the store even when its listener
        takes nothing); store ingest-stalled about ``siem`` once it has stored none for ``after``
        seconds before ``at``, ingest-resumed once it stores one again. ``beat``: the longest
        seconds between two heartbeats of a watch (0: not known). Returns the ids of the events
        stored; the state changes only once they are."""
        if not self.fed_read:  # the newest such record before the detections' first pass
            fed = db.execute("SELECT received FROM events WHERE id <= ? AND source IS NOT ? AND host IS NOT ? ORDER BY id DESC LIMIT 1",
                             (window[0], OWN_SOURCE, siem)).fetchone()
            self.fed, self.fed_read = (_parse(fed[0]) if fed else None), True
        first, newest = db.execute("SELECT MIN(received), MAX(received) FROM events WHERE id > ? AND id <= ? AND source IS NOT ? "
                                   "AND host IS NOT ?", (*window, OWN_SOURCE, siem)).fetchone()
        back = _parse(first) if first else None
        if back and newest:
            if self.fed is not None and (back - self.fed).total_seconds() > max(after / 2, beat + HEARTBEAT_SLACK):
                self.started = max(self.started, back)  # the siem was not listening: no source's silence
            self.fed = max(self.fed or _parse(newest), _parse(newest))
        if self.fed is None:
            return []
        if self.stalled:
            declared, before = self.stalled
            if self.fed <= declared:
                return []
            # it lasted from the last record before it to the first after it (after a restart of the
            # detections during the stall, to the newest they found)
            stored = [self._own(db, FED_AGAIN, siem, before, ((back or self.fed) - before).total_seconds(), after, at)]
            self.stalled = None
            return stored
        quiet = (at - max(self.fed, self.started)).total_seconds()
        if quiet <= after:
            return []
        stored = [self._own(db, STALLED, siem, self.fed, quiet, after, at)]
        self.stalled = (at, self.fed)
        return stored

    @staticmethod
    def _own(db: sqlite3.Connection, kind: str, host: str | None, heard: datetime, seconds: float, after: float, at: datetime) -> int:
        """One event of the detections' own about ``host``, at ``at``: ``heard`` is when its watch was
        last heard (the ingest last stored another host's record) before the silence (the stall), ``seconds`` how
        long it has lasted (or did)."""
        message = {"event": kind, "host": host, "last_heard": _stamp(heard), "seconds": round(seconds, 1), "silent_after": after}
        return store(db, {f: None for f in FIELDS} | {"time": _stamp(at), "host": host, "source": OWN_SOURCE, "event_type": kind,
                                                      "outcome": f"{_OUTCOMES[kind]} {int(seconds)} s",
                                                      "message": json.dumps(message, sort_keys=True)})


def _look_back(rule: dict[str, Any]) -> int:
    """Seconds of events a rule reads: a correlation's timespan plus a minute (plus the longest
    timespan of the counting correlations a temporal one names: their windows end inside its
    own), 600 for a rule that alerts per event."""
    if rule["kind"] == "event":
        return 600
    return int(rule.get("timespan") or 0) + 60 + max((int(s.get("timespan") or 0) for s in rule.get("steps") or []), default=0)


_STORE_STAMP = re.compile(r"^[0-9T:.Z-]+$")


def _refresh_window(db: sqlite3.Connection, since: datetime) -> None:
    """temp.recent: the events whose time is at or after ``since`` (a pass's longest look-back),
    kept on the connection from one pass to the next. Each pass adds the events stored since the
    one before and removes those older than ``since``, where copying the whole look-back again
    cost every pass about as many rows as the lab sends in ten minutes. Built again whole when
    ``since`` is earlier than the last pass's, or when the store's newest id is lower than the last
    pass saw (a guard: a snapshot's restore restarts the evaluator, and events are never changed
    once stored). Indexed on the time, the source and the event type, which every rule's query
    names. One savepoint: the table and what it holds up to (temp.recent_state) change together or
    not at all; sqlite3.Error is raised with nothing changed."""
    stamp = _stamp(since)
    columns = ", ".join(FIELDS)
    db.execute("SAVEPOINT refresh_window")
    try:
        top = int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        kept = db.execute("SELECT since, last_id FROM temp.recent_state").fetchone() \
            if db.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'recent_state'").fetchone() else None
        if kept is None or stamp < kept[0] or top < kept[1]:
            db.execute("DROP TABLE IF EXISTS temp.recent")
            db.execute(f"CREATE TEMP TABLE recent (id INTEGER PRIMARY KEY, timestamp TEXT, {', '.join(f'{f} TEXT' for f in FIELDS)})")
            for column in ("timestamp", "source", "event_type"):
                db.execute(f"CREATE INDEX temp.recent_{column} ON recent ({column})")
            db.execute(f"INSERT INTO temp.recent SELECT id, time, {columns} FROM events WHERE id <= ? AND time >= ?", (top, stamp))
            db.execute("CREATE TEMP TABLE IF NOT EXISTS recent_state (since TEXT, last_id INTEGER)")
            db.execute("DELETE FROM temp.recent_state")
            db.execute("INSERT INTO temp.recent_state VALUES (?, ?)", (stamp, top))
        else:
            db.execute(f"INSERT INTO temp.recent SELECT id, time, {columns} FROM events WHERE id > ? AND id <= ? AND time >= ?",
                       (kept[1], top, stamp))
            db.execute("DELETE FROM temp.recent WHERE timestamp < ?", (stamp,))
            db.execute("UPDATE temp.recent_state SET since = ?, last_id = ?", (stamp, top))
    except BaseException:
        if db.in_transaction:  # SQLite rolls back the whole transaction itself after some errors (full, I/O)
            db.execute("ROLLBACK TO refresh_window")
            db.execute("RELEASE refresh_window")
        raise
    db.execute("RELEASE refresh_window")


def _show_window(db: sqlite3.Connection, since: datetime) -> None:
    """temp.logs: the events of temp.recent at or after ``since`` (one rule's look-back), as
    pySigma's SQLite backend reads them: the relation `logs`, its column `timestamp`, and `id`
    the event's id (a view has no rowid: pacslab/detections.py has the backend name `id`). A
    view, made again for each look-back of a pass; ``since`` is written into it as the store
    writes times (UTC, it holds no quote). Raises ValueError for any other stamp."""
    stamp = _stamp(since)
    if not _STORE_STAMP.match(stamp):
        raise ValueError(f"not a time of the store: {stamp!r}")
    db.execute("DROP VIEW IF EXISTS temp.logs")
    db.execute(f"CREATE TEMP VIEW logs AS SELECT * FROM temp.recent WHERE timestamp >= '{stamp}'")


def _evaluate_rule(db: sqlite3.Connection, rule: dict[str, Any], assets: dict[str, Any]) -> list[int]:
    """One rule over the events of its look-back (temp.logs); each result's alert, case and
    containment decision are written in one transaction (a restart between them cannot leave an
    alert without its decision)."""
    touched: list[int] = []
    if rule.get("steps"):
        results = _sequences(db, rule)
    elif rule.get("base_sql"):
        results = _counting_windows(db, rule)
    else:
        cur = db.execute(rule["sql"])
        columns = [c[0] for c in cur.description]
        results = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    for found in results:
        db.execute("BEGIN IMMEDIATE")
        try:
            touched.append(_raise(db, rule, found, assets))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return touched


def _event_ids(found: dict[str, Any]) -> list[int]:
    """The store ids of the events behind one result of a correlation ("<rule>:<id>" each in pySigma's, plain ids in the siem's)."""
    return sorted({int(str(e).rsplit(":", 1)[-1]) for e in json.loads(found.get("event_ids") or "[]")})


# A group's matches of a counting correlation's base rules, sorted: (time in epoch seconds, event
# id, the counted field's value folded or None); and each window that qualifies, unmerged: (its end,
# the index of its first match, the index after its last).
_Matches = list[tuple[float, int, Any]]
_Windows = list[tuple[float, int, int]]


def _qualifying(db: sqlite3.Connection, rule: dict[str, Any], keep: Any = None) -> dict[tuple[Any, ...], tuple[_Matches, _Windows]]:
    """An event_count or value_count correlation (Sigma 2.0) over its base rules' matches in
    temp.logs, in one pass per group (its group_by values, folded: a match without one is left out;
    ``keep``, a test of a group's values, leaves out the groups it refuses): a window ends at each
    match's time and spans the rule's timespan before it (both ends included, as pySigma's SQLite
    backend has it); it qualifies when it holds ``threshold`` matches, or distinct values of
    ``counted`` (compared without case, NULL not counted)."""
    cur = db.execute(rule["base_sql"])
    columns = [c[0] for c in cur.description]
    groups: dict[tuple[Any, ...], _Matches] = {}
    for row in cur.fetchall():
        match = dict(zip(columns, row, strict=True))
        keys = tuple(_folded(match.get(f)) for f in rule["group_by"])
        if match.get("timestamp") is None or any(k is None for k in keys) or (keep is not None and not keep(keys)):
            continue
        value = _folded(match.get(rule["counted"])) if rule.get("counted") else None
        when = round(_parse(str(match["timestamp"])).timestamp(), 3)
        groups.setdefault(keys, []).append((when, int(match["id"]), value))
    span, threshold = float(rule.get("timespan") or 0), int(rule.get("threshold") or 1)
    out: dict[tuple[Any, ...], tuple[_Matches, _Windows]] = {}
    for keys, matches in groups.items():
        matches.sort()
        windows: _Windows = []
        values: dict[Any, int] = {}
        left = right = 0
        while right < len(matches):
            end = matches[right][0]
            while right < len(matches) and matches[right][0] == end:  # every match at the window's end is in it
                value = matches[right][2]
                if value is not None:
                    values[value] = values.get(value, 0) + 1
                right += 1
            while matches[left][0] < end - span:
                value = matches[left][2]
                if value is not None:
                    values[value] -= 1
                    if not values[value]:
                        del values[value]
                left += 1
            if (len(values) if rule.get("counted") else right - left) >= threshold:
                windows.append((end, left, right))
        out[keys] = (matches, windows)
    return out


def _counting_windows(db: sqlite3.Connection, rule: dict[str, Any]) -> list[dict[str, Any]]:
    """An event_count or value_count correlation's qualifying windows (_qualifying), those that
    overlap merged, as rows like those of the backend's query: group_keys (JSON), window_start and
    window_end (epoch seconds), event_ids (JSON list)."""
    span, results = float(rule.get("timespan") or 0), []
    for keys, (matches, qualified) in sorted(_qualifying(db, rule).items(), key=lambda g: str(g[0])):
        windows: list[list[Any]] = []  # [start, end, first index, last index], merged when they overlap
        for end, left, right in qualified:
            if windows and end - span <= windows[-1][1]:
                windows[-1][1], windows[-1][3] = end, right
            else:
                windows.append([end - span, end, left, right])
        for start, end, first, last in windows:
            results.append({"group_keys": json.dumps(dict(zip(rule["group_by"], keys, strict=True))), "window_start": start,
                            "window_end": end, "event_ids": json.dumps(sorted(m[1] for m in matches[first:last]))})
    return sorted(results, key=lambda r: (r["window_end"], r["group_keys"]))


def _sequences(db: sqlite3.Connection, rule: dict[str, Any]) -> list[dict[str, Any]]:
    """A temporal or temporal_ordered correlation (Sigma 2.0) over its steps' matches in temp.logs,
    per group (the rule's group_by values, folded; a match without one is left out). A base rule's
    step matches at each of its events; a counting correlation's at the end of each window that
    qualifies (_qualifying), with that window's events.

    A sequence ends at each time T a match of the last step (temporal_ordered) or of any step
    (temporal) has: temporal_ordered, the last step's matches at T, then each earlier step's latest
    matches strictly before the next step's, none before T minus the timespan; temporal, every
    match of every step from T minus the timespan to T. Sequences of a group that overlap are
    merged, with the events of every match they hold: every break-in after a guessing shows, where
    pySigma's query names the first of each step per window only. Rows as the backend's query gives
    them: group_keys (JSON), window_start (the first event's time) and window_end (epoch seconds),
    event_ids (JSON list of ids)."""
    fields, span, ordered = rule["group_by"], float(rule["timespan"]), rule["kind"] == "temporal_ordered"
    # per group, per step: its matches, each (time, start, events: a tuple of ids, or (its own group, first, after) of a window)
    found: dict[tuple[Any, ...], list[list[tuple[float, float, Any]]]] = {}
    counted: dict[int, dict[tuple[Any, ...], _Matches]] = {}  # a counting step's matches per its own group
    # The base rules' steps first: a sequence needs every step, so a counting step (a scan's
    # thousands of drops) is counted only in the groups where every base step matched, if any.
    wanted: set[tuple[Any, ...]] | None = None
    for slot in sorted(range(len(rule["steps"])), key=lambda s: "group_by" in rule["steps"][s]):
        step = rule["steps"][slot]
        if wanted is not None and not wanted:
            return []
        if "group_by" in step:
            counted[slot] = {}
            project = [step["group_by"].index(f) for f in fields]
            keep = None if wanted is None else (lambda own, project=project, wanted=wanted: tuple(own[i] for i in project) in wanted)
            for own, (matches, windows) in _qualifying(db, step, keep).items():
                counted[slot][own] = matches
                keys = tuple(own[i] for i in project)
                found.setdefault(keys, [[] for _ in rule["steps"]])[slot] += [(end, matches[left][0], (own, left, right))
                                                                             for end, left, right in windows]
            continue
        cur = db.execute(step["base_sql"])
        columns = [c[0] for c in cur.description]
        matched: set[tuple[Any, ...]] = set()
        for row in cur.fetchall():
            match = dict(zip(columns, row, strict=True))
            keys = tuple(_folded(match.get(f)) for f in fields)
            if match.get("timestamp") is None or any(k is None for k in keys):
                continue
            when = round(_parse(str(match["timestamp"])).timestamp(), 3)
            found.setdefault(keys, [[] for _ in rule["steps"]])[slot].append((when, when, (int(match["id"]),)))
            matched.add(keys)
        wanted = matched if wanted is None else wanted & matched
    results = []
    last = len(rule["steps"]) - 1
    for keys, slots in sorted(found.items(), key=lambda g: str(g[0])):
        if not all(slots):
            continue
        for matches in slots:
            matches.sort(key=lambda m: m[0])
        times = [[m[0] for m in matches] for matches in slots]
        merged: list[list[Any]] = []  # [start, end, {slot: [(first, last) index ranges into slots[slot], both included]}]
        for end in sorted(set(times[last]) if ordered else {t for ts in times for t in ts}):
            chosen: dict[int, tuple[int, int]] = {}
            if ordered:  # back from T: each step's latest matches before the next one's
                chosen[last], bound = (bisect.bisect_left(times[last], end), bisect.bisect_right(times[last], end) - 1), end
                for slot in range(last - 1, -1, -1):
                    latest = bisect.bisect_left(times[slot], bound) - 1
                    if latest < 0 or times[slot][latest] < end - span:
                        break
                    bound = times[slot][latest]
                    chosen[slot] = (bisect.bisect_left(times[slot], bound), latest)
            else:  # every match of every step in the timespan up to T
                chosen = {slot: (bisect.bisect_left(ts, end - span), bisect.bisect_right(ts, end) - 1) for slot, ts in enumerate(times)}
            if len(chosen) < len(slots) or any(first > latest for first, latest in chosen.values()):
                continue
            start = min(slots[slot][first][1] for slot, (first, _) in chosen.items())  # to merge by; the row's, from its events below
            if merged and start <= merged[-1][1]:
                merged[-1][0], merged[-1][1] = min(merged[-1][0], start), max(merged[-1][1], end)
            else:
                merged.append([start, end, {}])
            for slot, held in chosen.items():
                merged[-1][2].setdefault(slot, []).append(held)
        for start, end, held in merged:
            ids: set[int] = set()
            for slot, ranges in held.items():
                windows: dict[Any, list[tuple[int, int]]] = {}  # a counting step's windows per its own group: (first, last) matches
                for first, latest in _union(ranges):
                    for index in range(first, latest + 1):
                        events = slots[slot][index][2]
                        if slot in counted:
                            own, low, after = events
                            windows.setdefault(own, []).append((low, after - 1))
                        else:
                            ids.update(events)
                            start = min(start, slots[slot][index][0])
                for own, spans in windows.items():
                    for low, high in _union(spans):
                        ids.update(m[1] for m in counted[slot][own][low:high + 1])
                        start = min(start, counted[slot][own][low][0])
            results.append({"group_keys": json.dumps(dict(zip(fields, keys, strict=True))), "window_start": start,
                            "window_end": end, "event_ids": json.dumps(sorted(ids))})
    return sorted(results, key=lambda r: (r["window_end"], r["group_keys"]))


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Index ranges (first, last; both included) merged where they overlap or touch, in order."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def _folded(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _raise(db: sqlite3.Connection, rule: dict[str, Any], found: dict[str, Any], assets: dict[str, Any]) -> int:
    if rule["kind"] == "event":
        ids = [int(found["id"])]
        entities = {f: found.get(f) for f in rule.get("group_by") or ("host",)}
        first = last = found["time"]
    else:
        ids = _event_ids(found)
        entities = json.loads(found["group_keys"] or "{}")
        first, last = _from_epoch(found["window_start"]), _from_epoch(found["window_end"])
    key = json.dumps(entities, sort_keys=True)
    if rule["kind"] == "event":  # one alert per event: an event some alert of the rule already holds raised it
        held = db.execute("SELECT a.id FROM alerts a, json_each(a.events) e WHERE a.rule_id = ? AND e.value = ? LIMIT 1",
                          (rule["id"], ids[0])).fetchone()
        if held:
            return int(held[0])
    # One alert per rule and entities while it keeps firing: a window that starts before the alert's
    # last event plus the rule's timespan continues it.
    gap = timedelta(seconds=int(rule.get("timespan") or 0))
    for alert_id, events, last_seen in db.execute("SELECT id, events, last_seen FROM alerts WHERE rule_id = ? AND entities = ?"
                                                  " ORDER BY id DESC LIMIT 1", (rule["id"], key)):
        if rule["kind"] != "event" and _parse(first) <= _parse(last_seen) + gap:
            merged = sorted(set(json.loads(events)) | set(ids))
            if merged != sorted(json.loads(events)) or last > last_seen:
                db.execute("UPDATE alerts SET events = ?, last_seen = MAX(last_seen, ?), updated = ? WHERE id = ?",
                           (json.dumps(merged), last, now(), alert_id))
                added = sorted(set(ids) - set(json.loads(events)))
                if rule.get("containment") and added and _decide_again(db, int(alert_id), rule, merged):
                    _contain(db, int(alert_id), rule, str(entities.get(rule["containment"]) or ""), added, assets)
            return int(alert_id)
    cur = db.execute("INSERT INTO alerts (rule_id, rule, title, severity, entities, events, first_seen, last_seen, raised, updated)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (rule["id"], rule["name"], rule["title"], rule["level"], key, json.dumps(ids), first, last, now(), now()))
    alert_id = int(cur.lastrowid or 0)
    _open_case(db, alert_id, rule["level"], entities, assets)
    if rule.get("containment"):
        _contain(db, alert_id, rule, str(entities.get(rule["containment"]) or ""), ids, assets)
    return alert_id


def _decide_again(db: sqlite3.Connection, alert_id: int, rule: dict[str, Any], events: list[int]) -> bool:
    """Whether an alert that goes on (``events``: all of its events now) needs a new containment decision:
    - its last decision was withheld as authorised activity, and its events since that decision
      that fall outside every window for the address fire the rule on their own (as many as its
      threshold, of distinct values of the field a value_count counts): the host scans again after
      its window, not a stray packet of its ordinary traffic; for a sequence, its events that no
      window covers, from before the decision too, form one that holds an event since the
      decision (five failures outside a window, a sign-in inside it, then one outside: a break-in);
    - or it quarantined the host, the fw has released it since (the release is shipped here), and
      the new events came after the release (events are numbered as they arrive); for a sequence
      (a temporal correlation), those after the release that no window covers form it on their
      own: a person's sign-in after their released computer's break-in is not another break-in,
      five failures and a sign-in after the release are."""
    row = db.execute("SELECT address, upto, decision, reason FROM containment WHERE alert_id = ? ORDER BY id DESC LIMIT 1",
                     (alert_id,)).fetchone()
    if row is None:
        return False
    address, upto, decision, reason = row
    if decision == "withheld":
        if not str(reason).startswith("authorised activity"):
            return False
        if rule.get("steps"):
            return _fires_outside_windows(db, rule, events, address, newer_than=upto)
        since = [i for i in events if i > upto]
        return bool(since) and _fires_outside_windows(db, rule, since, address)
    released = db.execute("SELECT MAX(id) FROM events WHERE event_type = 'containment-release' AND outcome = 'changed'"
                          " AND dst_ip = ? AND id > ?", (address, upto)).fetchone()[0]
    if released is None or max(events) <= released:
        return False
    return not rule.get("steps") or _fires_outside_windows(db, rule, [i for i in events if i > released], address)


# A window of authorised activity for an address covers an event from its start to its end.
_IN_WINDOW = ("w.starts <= e.time AND w.ends >= e.time AND (w.addresses = '[]' OR EXISTS (SELECT 1 FROM json_each(w.addresses)"
              " WHERE value = ?))")


def _fires_outside_windows(db: sqlite3.Connection, rule: dict[str, Any], ids: list[int], address: str, newer_than: int = 0) -> bool:
    """Whether the events ``ids`` that no window of authorised activity for ``address`` covers fire
    the rule on their own (a stray packet of the host's ordinary traffic beside an authorised scan
    does not): a counting correlation counts them over its windows (_counting_windows), a temporal
    one looks for its sequence among them alone (_sequences: a person's sign-in after the suite's
    own guessing in a window is no break-in; ``newer_than``: a sequence that holds an event of a
    later id), both over the evaluation's view ``logs``; a rule that alerts per event fires on any
    one of them."""
    # the ids as one JSON parameter: an alert of a long scan holds any number of events (a statement's
    # variables are limited: 32,766 in SQLite's default build, 250,000 in Debian's)
    outside = [i for (i,) in db.execute(f"SELECT id FROM events e WHERE id IN (SELECT value FROM json_each(?)) AND NOT EXISTS"
                                        f" (SELECT 1 FROM authorised w WHERE {_IN_WINDOW})", (json.dumps(ids), address))]
    if not outside or not (rule.get("base_sql") or rule.get("steps")):
        return bool(outside)
    listed = ", ".join(str(int(i)) for i in outside)  # integers the store numbered, as SQL literals

    def among(query: str) -> str:
        return f"SELECT * FROM ({query}) WHERE id IN ({listed})"

    if rule.get("steps"):
        found = _sequences(db, rule | {"steps": [step | {"base_sql": among(step["base_sql"])} for step in rule["steps"]]})
        return any(max(_event_ids(f), default=0) > newer_than for f in found)
    return bool(_counting_windows(db, rule | {"base_sql": among(rule["base_sql"])}))


def _reserved(address: str, subnet: str, gateway: str | None) -> bool:
    """Whether ``address`` is its zone's network or broadcast address, or the zone's Docker bridge's
    own (``gateway``: the machine's, never a lab host's; assets.json gateways, from the lab's plan)."""
    try:
        net, ip = ipaddress.ip_network(subnet, strict=False), ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip in (net.network_address, net.broadcast_address) or str(ip) == gateway


def _relayed(db: sqlite3.Connection, ids: list[int], bastion: str) -> bool:
    """Whether every event of ``ids`` is a sign-in another host's sshd logged: what a maintained host
    (roles/maintenance) says of a session the bastion ``bastion`` relayed for a vendor, from the
    bastion's address. A scan or a sign-in at the bastion itself is the bastion's own doing."""
    rows = db.execute("SELECT source, host FROM events WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
    return bool(rows) and all(source == "sshd" and host != bastion for source, host in rows)


def _contain(db: sqlite3.Connection, alert_id: int, rule: dict[str, Any], address: str, ids: list[int], assets: dict[str, Any]) -> None:
    """Decide the containment of a new alert's address: quarantine, or withheld with the reason.
    Windows of authorised activity cover the alert when what they do not cover does not fire the
    rule on its own."""
    asset = assets.get("addresses", {}).get(address)
    zone = (asset or {}).get("zone") or (_whose(address, assets)["src_zone"] if address else None)
    name = asset["host"] if asset else address
    window = db.execute(f"SELECT w.id, w.reason FROM authorised w, events e WHERE e.id IN (SELECT value FROM json_each(?)) AND {_IN_WINDOW}"
                        " ORDER BY w.id LIMIT 1", (json.dumps(ids), address)).fetchone()
    if window and _fires_outside_windows(db, rule, ids, address):
        window = None
    if asset is None and zone is None:
        decision, reason = "withheld", f"{address or 'no address'} is no lab host's and in no lab zone: nothing the fw may quarantine"
    elif asset is None and _reserved(address, str(assets.get("zones", {}).get(zone, "")), assets.get("gateways", {}).get(zone)):
        decision, reason = "withheld", f"{address} is the {zone} zone's network, broadcast or bridge address: no device to cut off"
    elif asset is not None and asset.get("image") == "fw":
        decision, reason = "withheld", "the fw's own address"
    elif asset is not None and not asset.get("deployed", True):
        decision, reason = "withheld", f"{name} is planned: nothing runs at its address"
    elif asset is not None and asset.get("image") == "bastion" and _relayed(db, ids, name):
        decision, reason = "withheld", (f"{name} relays the vendors' sessions to the hosts they maintain: containing it ends "
                                        "every one, a person decides (pacslab quarantine)")
    elif asset is not None and asset.get("criticality") == "critical":
        decision, reason = "withheld", (f"{name} is a critical asset: containing it stops clinical work, a person decides "
                                        "(pacslab quarantine)")
    elif zone in assets.get("spared_zones", []):
        decision, reason = "withheld", f"{name} is in the {zone} zone, which a quarantined host keeps"
    elif window:
        decision, reason = "withheld", f"authorised activity (window {window[0]}: {window[1]})"
    else:  # a lab host, or an address no host has in a lab zone: a rogue device, which the fw cuts off the same way
        whose = "" if asset else f" (no lab host has {address}, in the {zone} zone)"
        decision, reason = "quarantine", f"siem alert {alert_id}: {rule['name']}{whose}"
    db.execute("INSERT INTO containment (alert_id, address, host, upto, decision, reason, decided) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (alert_id, address or None, (asset or {}).get("host"), max(ids), decision, reason, now()))


def containment(db: sqlite3.Connection, in_force: bool = False) -> list[dict[str, Any]]:
    """The containment decisions, oldest first: [{id, alert, address, host, upto (the newest event
    behind it), decision, reason, decided}]. ``in_force``: only the decisions to quarantine that no
    release of their address has ended since (the fw's containment-release, shipped here): what
    the fw is to enforce, whatever it remembers."""
    rows = db.execute("SELECT id, alert_id, address, host, upto, decision, reason, decided FROM containment c"
                      " WHERE NOT ? OR (decision = 'quarantine' AND NOT EXISTS (SELECT 1 FROM events e WHERE"
                      " e.event_type = 'containment-release' AND e.outcome = 'changed' AND e.dst_ip = c.address AND e.id > c.upto))"
                      " ORDER BY id", (in_force,)).fetchall()
    return [dict(zip(("id", "alert", "address", "host", "upto", "decision", "reason", "decided"), r, strict=True)) for r in rows]


def authorise(db: sqlite3.Connection, minutes: float, reason: str, by: str, addresses: list[str]) -> int:
    """Open a window of authorised activity from now; its id."""
    start = datetime.now(UTC)
    cur = db.execute("INSERT INTO authorised (addresses, starts, ends, reason, by) VALUES (?, ?, ?, ?, ?)",
                     (json.dumps(sorted(addresses)), _stamp(start), _stamp(start + timedelta(minutes=minutes)), reason, by))
    return int(cur.lastrowid or 0)


def end_window(db: sqlite3.Connection, window: int) -> None:
    """Close a window now (never later than it was opened for)."""
    db.execute("UPDATE authorised SET ends = MIN(ends, ?) WHERE id = ?", (now(), window))


# ---------------------------------------------------------------------------------------------
# Vendors' maintenance windows (C-DET-08, CSF DE.CM-6): when a vendor may work, by change ticket


# The events that are a vendor's sign-in: sshd's success at the bastion (a vendor reaches the lab
# only through it, flow F08). The sign-in a maintenance session then makes at its target (the
# target's own sshd log, from the bastion's address) is the same visit, not another one.
VENDOR_SIGN_INS = ("ssh-login-success",)


def in_maintenance(db: sqlite3.Connection, event: dict[str, Any], assets: dict[str, Any]) -> str | None:
    """The ``maintenance`` field of a normalised event: None unless it is a vendor's sign-in at a
    bastion (its user, compared without case, is one of assets.json "vendors"; its host has the
    bastion image); then "window N" for the oldest maintenance window of that vendor whose span
    holds the event's time (both ends included), else "outside-window"."""
    user = event.get("user")
    if event.get("event_type") not in VENDOR_SIGN_INS or not isinstance(user, str):
        return None
    if not any(a.get("host") == event.get("host") and a.get("image") == "bastion" for a in assets.get("addresses", {}).values()):
        return None
    vendors = {str(v).lower() for v in assets.get("vendors", [])}
    if user.lower() not in vendors:
        return None
    row = db.execute("SELECT id FROM maintenance WHERE lower(user) = ? AND starts <= ? AND ends >= ? ORDER BY id LIMIT 1",
                     (user.lower(), event["time"], event["time"])).fetchone()
    return f"window {row[0]}" if row else "outside-window"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def shift(event: dict[str, Any], assets: dict[str, Any]) -> str | None:
    """The ``shift`` field of a normalised event (C-DET-07): None unless a person did it (it names
    a user) and the lab has working hours (assets.json "working_hours": {timezone (IANA), days
    (mon..sun), start, end ("HH:MM", start included, end excluded)}); then "on-hours" when its time,
    in that time zone, is on one of the days between start and end, else "off-hours". Working
    hours that cannot be read mark nothing (stderr says why)."""
    hours = assets.get("working_hours")
    if not hours or not event.get("user") or not event.get("time"):
        return None
    try:
        when = _parse(str(event["time"])).astimezone(zoneinfo.ZoneInfo(str(hours["timezone"])))
        start, end = (datetime.strptime(str(hours[k]), "%H:%M").time() for k in ("start", "end"))
        days = {str(d).lower() for d in hours["days"]}
    except (KeyError, TypeError, ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        print(f"pacslab-siem: working_hours: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return None
    return "on-hours" if WEEKDAYS[when.weekday()] in days and start <= when.time().replace(tzinfo=None) < end else "off-hours"


class MaintenanceError(ValueError):
    """A window that cannot be opened: no vendor of the lab's, or a length that is no length."""


MAX_MAINTENANCE_MINUTES = 7 * 24 * 60  # a window longer than a week is a standing access, not a window


def open_maintenance(db: sqlite3.Connection, user: str, minutes: float, reason: str, by: str, assets: dict[str, Any],
                     start: datetime | None = None) -> int:
    """Open a maintenance window for the vendor ``user`` from ``start`` (now) for ``minutes``; its
    id. MaintenanceError when ``user`` is no vendor of the lab definition, or ``minutes`` is not
    more than 0 and at most a week, or ``reason`` is empty."""
    if user not in assets.get("vendors", []):
        raise MaintenanceError(f"{user!r} is no vendor of the lab definition (vendors: {', '.join(assets.get('vendors', [])) or 'none'})")
    if not (0 < minutes <= MAX_MAINTENANCE_MINUTES):
        raise MaintenanceError(f"--minutes {minutes}: more than 0 and at most {MAX_MAINTENANCE_MINUTES} (a week)")
    if not reason.strip():
        raise MaintenanceError("a window needs a reason (the change ticket, the work)")
    begin = start or datetime.now(UTC)
    starts, ends = _stamp(begin), _stamp(begin + timedelta(minutes=minutes))
    cur = db.execute("INSERT INTO maintenance (user, starts, ends, reason, by) VALUES (?, ?, ?, ?, ?)", (user, starts, ends, reason, by))
    window_id = int(cur.lastrowid or 0)
    _own_event(db, "maintenance-window-opened", user, window_id, f"{by} opened window {window_id} for {user} from {starts} to {ends}: {reason}")
    return window_id


def end_maintenance(db: sqlite3.Connection, window_id: int, by: str) -> dict[str, Any]:
    """Close the window now (never later than it was opened for); the window as it now is.
    LookupError when there is no such window."""
    found = [w for w in maintenance_windows(db) if w["id"] == window_id]
    if not found:
        raise LookupError(f"no maintenance window {window_id}")
    db.execute("UPDATE maintenance SET ends = MIN(ends, ?) WHERE id = ?", (now(), window_id))
    ended = next(w for w in maintenance_windows(db) if w["id"] == window_id)
    _own_event(db, "maintenance-window-ended", ended["user"], window_id, f"{by} ended window {window_id} of {ended['user']} at {ended['end']}")
    return ended


def _own_event(db: sqlite3.Connection, event_type: str, user: str, window_id: int, message: str) -> None:
    """A change of a maintenance window, stored as an event of this host (source pacslab-siem):
    who opened or ended which window, for whom, and why, beside the sign-ins it covers."""
    store(db, {f: None for f in FIELDS} | {"time": now(), "host": socket.gethostname(), "source": OWN_SOURCE,
                                           "event_type": event_type, "user": user, "outcome": f"window {window_id}", "message": message})


def maintenance_windows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every maintenance window, oldest first: [{id, user, start, end (UTC), reason, by}]."""
    rows = db.execute("SELECT id, user, starts, ends, reason, by FROM maintenance ORDER BY id").fetchall()
    return [dict(zip(("id", "user", "start", "end", "reason", "by"), r, strict=True)) for r in rows]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(http.server.BaseHTTPRequestHandler):
    """An HTTPS request whose TLS handshake runs in its own thread, within ``timeout``."""

    server_version = "pacslab-siem"
    timeout = 10  # seconds a client may take for the handshake and its request (a silent one is dropped)

    def handle(self) -> None:
        try:  # in this request's thread (the socket's timeout applies): a client that stalls holds only its own
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as exc:  # a scan, a plain TCP probe, a client that gave up: one line, no answer
            print(f"{self.client_address[0]} TLS handshake failed: {exc}", file=sys.stderr, flush=True)
            return
        super().handle()

    def answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        print(f"{self.client_address[0]} {format % args}", file=sys.stderr, flush=True)


class _Decisions(_Handler):
    """GET /containment: {"decisions": [the quarantine decisions in force]}; anything else 404. The TLS
    layer has already refused a client without a certificate the trusted anchors signed."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/containment":
            self.send_error(404)
            return
        with contextlib.closing(connect()) as db:
            body = json.dumps({"decisions": containment(db, in_force=True)}).encode()
        self.answer(200, body, "application/json")


# The console's answers: a page of the lab's own origin, never framed, cached or sent on as a
# referrer; no script, style or image of any origin (the pages have none).
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


CONSOLE_EVENTS = 500  # the events an alert's page lists at most (a scan's alert holds thousands); the rest are counted
CONSOLE_ROWS = 500  # the newest alerts, cases and decisions the index lists at most; the rest are counted


def console_pages(folder: Path) -> Any:
    """The console's Jinja2 environment (templates index.html, alert.html and missing.html in ``folder``), HTML
    autoescaping on for every template."""
    import jinja2  # the console's alone: ingest and evaluate stay on the standard library

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True, undefined=jinja2.StrictUndefined)


def console_page(db: sqlite3.Connection, pages: Any, path: str) -> tuple[int, str]:
    """(HTTP status, HTML) of the console's ``path``: "/" the newest CONSOLE_ROWS alerts, cases and
    containment decisions (newest first); "/alerts/<id>" that alert, its case, its first
    CONSOLE_EVENTS events and the captures retrieved around it (C-RSP-03); any other path, or an
    alert that does not exist, 404."""
    if path == "/":
        every = {"alerts": alerts(db)[::-1], "cases": cases(db)[::-1], "decisions": containment(db)[::-1]}
        return 200, pages.get_template("index.html").render(
            **{k: v[:CONSOLE_ROWS] for k, v in every.items()}, more={k: max(0, len(v) - CONSOLE_ROWS) for k, v in every.items()}, at=now())
    found = re.fullmatch(r"/alerts/([0-9]{1,18})", path)
    shown = alert(db, int(found.group(1))) if found else None
    if shown is None:
        return 404, pages.get_template("missing.html").render(path=path, at=now())
    case = next((c for c in cases(db) if c["id"] == shown["case"]), None)
    rows = db.execute(f"SELECT id, {', '.join(FIELDS)} FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
                      (json.dumps(shown["events"]), CONSOLE_EVENTS)).fetchall()
    behind = [dict(zip(("id", *FIELDS), r, strict=True)) for r in rows]
    return 200, pages.get_template("alert.html").render(alert=shown, case=case, events=behind, more=len(shown["events"]) - len(behind),
                                                        captures=captures(db, shown["id"]), at=now())


class _Console(_Handler):
    """GET only (http.server answers 501 to any other method); the pages of ``console_page``."""

    pages: Any = None

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with contextlib.closing(connect()) as db:
            status, html = console_page(db, self.pages, self.path.split("?", 1)[0])
        self.answer(status, html.encode(), "text/html; charset=utf-8", CONSOLE_HEADERS)


def serve(address: str, port: int, cert: str, key: str, clients: str | None, handler: type[_Handler] = _Decisions) -> None:
    """Serve ``handler`` over HTTPS (TLS 1.2 at least); with ``clients``, to the clients whose
    certificate the bundle's anchors signed only (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if clients:
        context.load_verify_locations(clients)
        context.verify_mode = ssl.CERT_REQUIRED

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[Any, Any]:  # the TLS handshake waits for the request's own thread
            sock, peer = self.socket.accept()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), peer

    Server((address, port), handler).serve_forever()


def _open_case(db: sqlite3.Connection, alert_id: int, level: str, entities: dict[str, Any], assets: dict[str, Any]) -> None:
    """The case of the lab host the alert is about (its source address first, else its host),
    enriched from the lab definition (owner, zone, criticality); of the person it is about when it
    names no host or address but a user (bulk-access), enriched with the person's owner (assets.json
    "people": lab_people and lab_service_accounts; none for a name the lab does not define). An open
    one is updated."""
    address = entities.get("src_ip")
    host_name = entities.get("host")
    person = entities.get("user") if not (address or host_name) else None
    asset = assets.get("addresses", {}).get(address) if address else None
    if asset is None and host_name:
        asset = assets.get("hosts", {}).get(host_name)
    if person:
        asset = {"owner": (assets.get("people", {}).get(person) or {}).get("owner")}
    subject = "" if person else (asset or {}).get("host") or address or host_name or "unknown"
    row = db.execute("SELECT id, severity FROM cases WHERE host = ? AND person IS ? AND status = 'open' ORDER BY id DESC LIMIT 1",
                     (subject, person)).fetchone()
    if row:
        case_id, severity = row
        if SEVERITY.get(level, 0) > SEVERITY.get(severity, 0):
            severity = level
        db.execute("UPDATE cases SET severity = ?, updated = ? WHERE id = ?", (severity, now(), case_id))
    else:
        cur = db.execute("INSERT INTO cases (host, person, severity, owner, zone, criticality, address, opened, updated)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (subject, person, level, (asset or {}).get("owner"), (asset or {}).get("zone"), (asset or {}).get("criticality"),
                          (asset or {}).get("address") or address, now(), now()))
        case_id = int(cur.lastrowid or 0)
    db.execute("UPDATE alerts SET case_id = ? WHERE id = ?", (case_id, alert_id))


def _from_epoch(value: Any) -> str:
    return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def alerts(db: sqlite3.Connection, alert_id: int | None = None) -> list[dict[str, Any]]:
    """Every alert, oldest first, or the one of ``alert_id``."""
    rows = db.execute("SELECT id, rule_id, rule, title, severity, entities, events, first_seen, last_seen, raised, updated, case_id"
                      " FROM alerts WHERE ? IS NULL OR id = ? ORDER BY id", (alert_id, alert_id)).fetchall()
    keys = ("id", "rule_id", "rule", "title", "severity", "entities", "events", "first_seen", "last_seen", "raised", "updated", "case")
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for a in out:
        a["entities"], a["events"] = json.loads(a["entities"]), json.loads(a["events"])
    return out


def alert(db: sqlite3.Connection, alert_id: int) -> dict[str, Any] | None:
    """One alert (as ``alerts`` gives them), or None."""
    return next(iter(alerts(db, alert_id)), None)


def cases(db: sqlite3.Connection) -> list[dict[str, Any]]:
    keys = ("id", "host", "person", "status", "severity", "owner", "zone", "criticality", "address", "opened", "updated")
    rows = db.execute(f"SELECT {', '.join(keys)} FROM cases ORDER BY id").fetchall()
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    recorded = captures(db)
    for c in out:
        c["alerts"] = [a for (a,) in db.execute("SELECT id FROM alerts WHERE case_id = ? ORDER BY id", (c["id"],))]
        c["captures"] = [k for k in recorded if k["case"] == c["id"]]
    return out


def captures(db: sqlite3.Connection, alert_id: int | None = None) -> list[dict[str, Any]]:
    """The recorded captures (C-RSP-03), oldest first, of one alert or all: [{id, alert, case, file,
    sha256, packets, bytes, start, end, complete, recorded}]."""
    rows = db.execute("SELECT id, alert_id, case_id, file, sha256, packets, bytes, starts, ends, complete, recorded FROM captures"
                      " WHERE ? IS NULL OR alert_id = ? ORDER BY id", (alert_id, alert_id)).fetchall()
    keys = ("id", "alert", "case", "file", "sha256", "packets", "bytes", "start", "end", "complete", "recorded")
    return [dict(zip(keys, r, strict=True)) | {"complete": bool(r[9])} for r in rows]


def window(db: sqlite3.Connection, alert_id: int, assets: dict[str, Any]) -> dict[str, Any] | None:
    """What a capture around the alert needs (C-RSP-03): {alert, case, entities, start, end (the
    times of its first and last event, UTC), addresses (the lab addresses it is about: its src_ip
    entity, else the address of its host entity, from the lab definition)}; None when there is no
    such alert."""
    found = alert(db, alert_id)
    if found is None:
        return None
    start, end = db.execute("SELECT MIN(time), MAX(time) FROM events WHERE id IN (SELECT value FROM json_each(?))",
                            (json.dumps(found["events"]),)).fetchone()
    entities = found["entities"]
    addresses = [entities["src_ip"]] if entities.get("src_ip") else []
    if not addresses and entities.get("host"):
        address = (assets.get("hosts", {}).get(entities["host"]) or {}).get("address")
        addresses = [address] if address else []
    return {"alert": alert_id, "case": found["case"], "entities": entities, "start": start or found["first_seen"],
            "end": end or found["last_seen"], "addresses": addresses}


def record_capture(db: sqlite3.Connection, alert_id: int, file: str, sha256: str, packets: int, size: int, start: str, end: str,
                   complete: bool) -> int:
    """Record a retrieved capture in the alert's case; its id. Raises LookupError for an unknown alert."""
    row = db.execute("SELECT case_id FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise LookupError(f"no alert {alert_id}")
    cur = db.execute("INSERT INTO captures (alert_id, case_id, file, sha256, packets, bytes, starts, ends, complete, recorded)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (alert_id, row[0], file, sha256, packets, size, start, end, int(complete), now()))
    return int(cur.lastrowid or 0)


def events(db: sqlite3.Connection, since_id: int = 0, contains: str = "") -> list[dict[str, Any]]:
    """The stored events after ``since_id`` whose raw message holds ``contains`` (all by default)."""
    cur = db.execute(f"SELECT id, {', '.join(FIELDS)}, received FROM events WHERE id > ? AND instr(message, ?) > 0 ORDER BY id",
                     (since_id, contains))
    columns = [c[0] for c in cur.description]
    return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]


# Passes in a row whose look-back could not be brought up to date (about 30 s at --every 2) after
# which the detections end, for supervisor to start them again on a new connection.
SKIPPED_PASSES = 15
EVALUATED = STORE.parent / "evaluated.json"  # the evaluator's last finished pass: {"started", "finished"} (UTC)


def _passed(started: str) -> None:
    """Note a finished pass of the rules (EVALUATED, replaced whole): a check that an event raised
    nothing waits for a pass that started after the event was stored, instead of guessing a time.
    A pass whose look-back could not be brought up to date is not noted; one where a single rule
    failed is (its error is on stderr)."""
    partial = EVALUATED.with_suffix(".tmp")
    partial.write_text(json.dumps({"started": started, "finished": now()}))
    partial.replace(EVALUATED)


def _load(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-siem", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--every", type=float, default=2.0, help="seconds between two runs of the rules")
    ev.add_argument("--once", action="store_true")
    au = sub.add_parser("authorise")
    au.add_argument("--minutes", type=float, default=30, help="how long the window stays open at most")
    au.add_argument("--reason", required=True)
    au.add_argument("--by", required=True)
    au.add_argument("--address", action="append", default=[], help="an address the window covers (repeat; none: any)")
    au.add_argument("--end", type=int, metavar="ID", help="close the window ID now instead")
    sv = sub.add_parser("serve")
    sv.add_argument("--address", required=True)
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--cert", required=True)
    sv.add_argument("--key", required=True)
    sv.add_argument("--clients", required=True, help="the bundle of the anchors whose certificates may ask")
    co = sub.add_parser("console")
    co.add_argument("--address", required=True)
    co.add_argument("--port", type=int, required=True)
    co.add_argument("--cert", required=True)
    co.add_argument("--key", required=True)
    co.add_argument("--pages", required=True, type=Path, help="the folder of the pages' templates")
    mw = sub.add_parser("maintenance", help="vendors' maintenance windows: open, end, list")
    mw_sub = mw.add_subparsers(dest="action", required=True)
    mo = mw_sub.add_parser("open")
    mo.add_argument("--user", required=True, help="the vendor (a person of the lab definition whose roles hold vendor)")
    mo.add_argument("--minutes", type=float, required=True)
    mo.add_argument("--reason", required=True)
    mo.add_argument("--by", required=True)
    me = mw_sub.add_parser("end")
    me.add_argument("id", type=int)
    me.add_argument("--by", required=True)
    mw_sub.add_parser("list")
    sub.add_parser("discovery", help="what the scanner's newest sweep of each zone found, and the unknown addresses the fw and the sensor saw (JSON)")
    wi = sub.add_parser("window")
    wi.add_argument("--alert", type=int, required=True)
    rc = sub.add_parser("record-capture")
    rc.add_argument("--alert", type=int, required=True)
    rc.add_argument("--file", required=True, help="the capture's file name, as the investigator got it")
    rc.add_argument("--sha256", required=True)
    rc.add_argument("--packets", type=int, required=True)
    rc.add_argument("--bytes", type=int, required=True)
    rc.add_argument("--start", required=True, help="the span it covers (UTC, ISO 8601)")
    rc.add_argument("--end", required=True)
    rc.add_argument("--partial", action="store_true", help="the ring no longer held the start of the span")
    for name in ("alerts", "cases", "events", "containment", "captures"):
        p = sub.add_parser(name)
        p.add_argument("--json", action="store_true")
        if name == "events":
            p.add_argument("--since-id", type=int, default=0)
            p.add_argument("--contains", default="", help="only the events whose raw message holds this text")
    args = parser.parse_args(argv)
    db = connect()
    assets = _load(ASSETS, {})
    if args.command == "ingest":
        ingest(sys.stdin, sys.stdout, db, assets)
        return 0
    if args.command == "serve":
        serve(args.address, args.port, args.cert, args.key, args.clients)
        return 0
    if args.command == "console":
        _Console.pages = console_pages(args.pages)
        serve(args.address, args.port, args.cert, args.key, None, _Console)
        return 0
    if args.command == "authorise":
        if args.end is not None:
            end_window(db, args.end)
            print(json.dumps({"ended": args.end}))
        else:
            print(json.dumps({"window": authorise(db, args.minutes, args.reason, args.by, args.address)}))
        return 0
    if args.command == "maintenance":
        try:
            if args.action == "open":
                print(json.dumps({"window": open_maintenance(db, args.user, args.minutes, args.reason, args.by, assets)}))
            elif args.action == "end":
                print(json.dumps(end_maintenance(db, args.id, args.by)))
            else:
                print(json.dumps(maintenance_windows(db), indent=1))
        except (MaintenanceError, LookupError) as exc:
            print(f"pacslab-siem: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, MaintenanceError) else 1
        return 0
    if args.command == "discovery":
        print(json.dumps(discovery(db), indent=1))
        return 0
    if args.command == "window":
        found = window(db, args.alert, assets)
        if found is None:
            print(f"pacslab-siem: no alert {args.alert}", file=sys.stderr)
            return 1
        print(json.dumps(found))
        return 0
    if args.command == "record-capture":
        if not re.fullmatch(r"[0-9a-f]{64}", args.sha256):
            print("pacslab-siem: --sha256 takes 64 lower-case hex digits", file=sys.stderr)
            return 2
        try:
            print(json.dumps({"capture": record_capture(db, args.alert, args.file, args.sha256, args.packets, args.bytes,
                                                        args.start, args.end, not args.partial)}))
        except LookupError as exc:
            print(f"pacslab-siem: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "evaluate":
        rules = _load(RULES, [])
        silences = Silences(db, datetime.now(UTC))
        skipped = 0  # passes in a row whose look-back could not be brought up to date
        while True:
            started = now()
            try:
                silences.listen(db, assets, datetime.now(UTC))
            except sqlite3.Error as exc:  # a busy store: the next pass reads on from where this one stood
                print(f"pacslab-siem evaluate: silences: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            try:
                evaluate(db, rules, assets)
            except sqlite3.Error as exc:  # no rule ran: not a pass a check may wait for (_passed)
                skipped += 1
                print(f"pacslab-siem evaluate: pass skipped ({skipped} in a row): {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if skipped >= SKIPPED_PASSES:
                    return 1  # supervisor starts the detections again, on a new connection
            else:
                skipped = 0
                _passed(started)
            if args.once:
                return 1 if skipped else 0
            time.sleep(args.every)
    found = {"alerts": alerts, "cases": cases, "containment": containment, "captures": captures}.get(args.command)
    rows = found(db) if found else events(db, args.since_id, args.contains)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items() if v not in (None, [], {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
