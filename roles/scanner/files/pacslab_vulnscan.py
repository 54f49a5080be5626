#!/usr/bin/python3
"""pacslab-vulnscan: scheduled vulnerability scans of the lab's hosts (C-RSK-02, C-DET-04; CSF ID.RA-1, DE.CM-8).

Every ``interval`` seconds (the first ``first_after`` seconds after the program starts: a converge
that changes it restarts it last, with the services it scans), one nmap service scan of every configured host (the
lab definition's deployed hosts in the zones the scanner may reach): a TCP connect scan of the
configured ports (``-sT -Pn``: the lab definition says the host is there; no raw socket), service
and version detection (``-sV --version-light``) and nmap's ``ssl-enum-ciphers`` on every port that
speaks TLS (the protocol versions it accepts and the weakest suite's strength grade, A to F). Its
XML report (``-oX -``) is read with ElementTree.

Each scan appends JSON lines to the results file, which roles/log_shipping ships to the siem:
- ``{"event": "vuln-service", "scan", "time", "zone", "host", "address", "proto", "port",
  "service", "product", "version", "tls", "tls_versions", "least_strength"}``: one per open port (the
  report; ``tls_versions`` [] and ``least_strength`` null where the port speaks no TLS);
- ``{"event": "vuln-finding", ..., "finding"}``: one per weakness of an open port, with the same
  fields: ``tls-below-1.2`` (it accepts SSL 3.0, TLS 1.0 or 1.1: RFC 8996, RFC 7568),
  ``weak-cipher`` (its weakest suite is graded below ``least_strength``, B to F) or
  ``tls-not-graded`` (it speaks TLS, and ssl-enum-ciphers could not grade it);
- ``{"event": "vuln-scan-finished", "scan", "time", "started", "zone", "hosts", "answered", "nmap"}``:
  one per zone, ``hosts`` the names scanned there, ``answered`` those that answered on some port;
- ``{"event": "vuln-scan-failed", "scan", "time", "zones", "error"}``: nmap could not start, did not
  finish or its report could not be read; nothing of that scan is reported, and the next try
  comes 10 minutes later (or at the interval, if shorter).
One scan at a time: each holds the report (flock) while it runs. With --once, the scan's id is
printed.
Times are UTC, RFC 3339 with milliseconds. The file is opened for each scan (a rotated file is
followed by a new one).

Usage: pacslab-vulnscan CONFIG [--once] [--host NAME ...]. CONFIG is JSON: {"interval": seconds,
"first_after": seconds, "timeout": seconds, "results": path, "ports": [numbers], "least_strength": "A".."F", "hosts":
[{"name", "zone", "address"}]}. ``--host`` scans those hosts only (a check's own scan). Exit 2 on
a config that cannot be used, with the reason on stderr; with --once, 1 when the scan failed.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, "/usr/local/lib/pacslab")  # roles/scanner installs pacslab_scanning.py there
from pacslab_scanning import run_nmap, stamp  # noqa: E402

NMAP = ["nmap", "-sT", "-Pn", "-n", "-sV", "--version-light", "--script", "ssl-enum-ciphers", "-oX", "-"]
WEAK_PROTOCOLS = ("SSLv3", "TLSv1.0", "TLSv1.1")  # RFC 7568 (SSL 3.0), RFC 8996 (TLS 1.0 and 1.1)
GRADES = "ABCDEF"  # ssl-enum-ciphers' strength grades, best first
RETRY_AFTER = 600  # seconds from a failed scan to the next try (at most the interval)


def read_report(xml: str) -> tuple[str, dict[str, list[dict[str, Any]]], set[str]]:
    """nmap's version; per IPv4 address, its open ports: [{proto, port, service, product, version,
    tls (nmap found TLS there: its service's tunnel, or ssl-enum-ciphers' answer), tls_versions
    (sorted), least_strength}]; and the addresses that answered on some port, open or closed (a
    host whose every port was filtered, or that is gone, did not). Raises ValueError for a run
    that did not finish."""
    root = ET.fromstring(xml)
    if root.tag != "nmaprun" or root.find("runstats/finished") is None:
        raise ValueError("the report is not a finished nmap run")
    found: dict[str, list[dict[str, Any]]] = {}
    answered: set[str] = set()
    for host in root.iter("host"):
        address = next((a.get("addr") for a in host.findall("address") if a.get("addrtype") == "ipv4"), None)
        if address is None:
            continue
        ports = found.setdefault(str(address), [])
        for port in host.iterfind("ports/port"):
            state = port.find("state")
            if state is not None and state.get("state") in ("open", "closed"):
                answered.add(str(address))
            if state is None or state.get("state") != "open":
                continue
            service = port.find("service")
            tls = port.find("script[@id='ssl-enum-ciphers']")
            versions = sorted(t.get("key", "") for t in tls.findall("table")) if tls is not None else []
            least = tls.find("elem[@key='least strength']") if tls is not None else None
            ports.append({"proto": port.get("protocol"), "port": int(port.get("portid", "0")),
                          "tls": tls is not None or (service is not None and service.get("tunnel") == "ssl"),
                          "service": service.get("name") if service is not None else None,
                          "product": service.get("product") if service is not None else None,
                          "version": service.get("version") if service is not None else None,
                          "tls_versions": versions, "least_strength": least.text if least is not None else None})
    return root.get("version", ""), found, answered


def findings(port: dict[str, Any], least_strength: str) -> list[str]:
    """The weaknesses of one open port (read_report's): tls-below-1.2, weak-cipher, and
    tls-not-graded for a TLS port ssl-enum-ciphers could not grade (no protocol or no grade: the
    port refused its many connections, e.g. the fw's DICOM rate limit): not known to be sound."""
    out = []
    if port["tls"] and not (port["tls_versions"] and port["least_strength"] in tuple(GRADES)):
        out.append("tls-not-graded")
    if any(v in WEAK_PROTOCOLS for v in port["tls_versions"]):
        out.append("tls-below-1.2")
    grade = port["least_strength"]
    if grade in tuple(GRADES) and GRADES.index(grade) > GRADES.index(least_strength):
        out.append("weak-cipher")
    return out


def scan(hosts: list[dict[str, Any]], ports: list[int], timeout: float) -> tuple[str, dict[str, list[dict[str, Any]]], set[str]]:
    """One nmap run over the hosts' addresses; raises RuntimeError with nmap's word when it fails."""
    argv = NMAP + ["-p", ",".join(str(p) for p in sorted(set(ports)))] + [h["address"] for h in hosts]
    return run_nmap(argv, read_report, timeout)


def scan_lines(scan_id: int, config: dict[str, Any], hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON lines of one scan of ``hosts`` (module docstring)."""
    started = stamp()
    try:
        version, found, answered = scan(hosts, config["ports"], float(config["timeout"]))
    except RuntimeError as exc:
        return [{"event": "vuln-scan-failed", "scan": scan_id, "time": stamp(), "zones": sorted({h["zone"] for h in hosts}),
                 "error": str(exc)}]
    finished, lines, ends = stamp(), [], []
    for zone in sorted({h["zone"] for h in hosts}):
        mine = [h for h in hosts if h["zone"] == zone]
        for host in mine:
            for port in found.get(host["address"], []):
                base = {"scan": scan_id, "time": finished, "zone": zone, "host": host["name"], "address": host["address"], **port}
                lines.append({"event": "vuln-service", **base})
                lines += [{"event": "vuln-finding", **base, "finding": f} for f in findings(port, config["least_strength"])]
        ends.append({"event": "vuln-scan-finished", "scan": scan_id, "time": finished, "started": started, "zone": zone,
                     "hosts": [h["name"] for h in mine], "answered": [h["name"] for h in mine if h["address"] in answered],
                     "nmap": version})
    return lines + ends


def load(path: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError("a JSON object")
    hosts = config.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise ValueError("hosts: a list of at least one {name, zone, address}")
    for i, host in enumerate(hosts):
        if not isinstance(host, dict) or not all(isinstance(host.get(k), str) for k in ("name", "zone", "address")):
            raise ValueError(f"hosts[{i}]: a mapping with name, zone and address")
        ipaddress.IPv4Address(host["address"])
    ports = config.get("ports")
    if not isinstance(ports, list) or not ports or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise ValueError("ports: a list of TCP ports, 1-65535")
    for key in ("interval", "timeout"):
        if not isinstance(config.get(key), int | float) or config[key] <= 0:
            raise ValueError(f"{key}: seconds, more than 0")
    if not isinstance(config.get("first_after"), int | float) or config["first_after"] < 0:
        raise ValueError("first_after: seconds, 0 or more")
    if not isinstance(config.get("results"), str):
        raise ValueError("results: the path of the results file")
    if config.get("least_strength") not in tuple(GRADES):
        raise ValueError("least_strength: one of A, B, C, D, E, F")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-vulnscan", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--once", action="store_true", help="one scan, then exit")
    parser.add_argument("--host", action="append", default=[], help="scan this configured host only (repeatable)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        hosts = [h for h in config["hosts"] if not args.host or h["name"] in args.host]
        if unknown := sorted(set(args.host) - {h["name"] for h in config["hosts"]}):
            raise ValueError(f"--host: {', '.join(unknown)} not among the configured hosts")
    except (OSError, ValueError) as exc:
        print(f"pacslab-vulnscan: {args.config}: {exc}", file=sys.stderr)
        return 2
    if not args.once:
        time.sleep(float(config["first_after"]))
    while True:
        began = time.monotonic()
        try:
            lines = scan_and_write(config, hosts)
        except OSError as exc:  # the report cannot be opened or written: said, and tried again later
            print(f"pacslab-vulnscan: {config['results']}: {exc}", file=sys.stderr, flush=True)
            lines = [{"event": "vuln-scan-failed", "scan": None}]
        failed = lines[0]["event"] == "vuln-scan-failed"
        if args.once:
            print(lines[0]["scan"])
            return 1 if failed else 0
        wait = min(RETRY_AFTER, config["interval"]) if failed else config["interval"]
        time.sleep(max(1.0, float(wait) - (time.monotonic() - began)))


def scan_and_write(config: dict[str, Any], hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One scan, its lines appended to the report; the lines. The report is held (flock) from the
    scan's start to its last line: one scan at a time, the daily one or a check's own."""
    with open(config["results"], "a", encoding="utf-8") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        lines = scan_lines(int(time.time() * 1000), config, hosts)
        out.writelines(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    return lines


if __name__ == "__main__":
    sys.exit(main())
