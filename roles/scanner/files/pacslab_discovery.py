#!/usr/bin/python3
"""pacslab-discovery: active discovery of the lab's own subnets (C-AST-01, C-DET-04).

Every ``interval`` seconds, one nmap ping sweep (``nmap -sn``: host discovery, no port scan) of
every address of the configured zones but each zone's excluded ones (the Docker bridge's own
address is the machine's, never a lab container's: roles/scanner leaves it out, and the fw's
address in a zone behind the fw). nmap answers an
address in the scanner's own zone by ARP, one behind the fw by ICMP echo (``-PE``: no TCP probe,
which the IDS would count as a scan). Its XML report (``-oX -``) is read with ElementTree.

Each round appends JSON lines to the results file, which roles/log_shipping ships to the siem:
- ``{"event": "host-up", "round", "time", "zone", "address", "mac", "reason"}``: one per address
  that answered (``mac`` null behind the fw; ``reason`` nmap's: arp-response, echo-reply,
  localhost-response);
- ``{"event": "sweep-finished", "round", "time", "zone", "subnet", "exclude", "started", "up",
  "nmap"}``: one per zone, ``up`` the sorted addresses that answered, ``exclude`` those not tried;
- ``{"event": "sweep-failed", "round", "time", "zones", "error"}``: nmap did not finish or its
  report could not be read; nothing of that round is reported as up.
Times are UTC, RFC 3339 with milliseconds. The file is opened for each round: a rotated file is
simply followed by a new one. Run as a user of its own with CAP_NET_RAW alone (``--privileged``
tells nmap to use raw sockets without being root).

Usage: pacslab-discovery CONFIG [--once]. CONFIG is JSON: {"interval": seconds, "results": path,
"timeout": seconds, "zones": [{"name", "subnet", "exclude": [addresses]}]}. Exit 2 on a config
that cannot be used, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, "/usr/local/lib/pacslab")  # roles/scanner installs pacslab_scanning.py there
from pacslab_scanning import run_nmap, stamp  # noqa: E402

NMAP = ["nmap", "--privileged", "-sn", "-n", "-PE", "--max-retries", "1", "-oX", "-", "-iL", "-"]


def targets(zones: list[dict[str, Any]]) -> list[str]:
    """Every host address of the zones' subnets but their excluded ones, in order."""
    out: list[str] = []
    for zone in zones:
        exclude = {ipaddress.ip_address(a) for a in zone.get("exclude", [])}
        out += [str(a) for a in ipaddress.ip_network(zone["subnet"]).hosts() if a not in exclude]
    return out


def read_report(xml: str) -> tuple[str, list[dict[str, Any]]]:
    """nmap's version and the hosts its XML report says are up: [{address, mac, reason}]."""
    root = ET.fromstring(xml)
    if root.tag != "nmaprun" or root.find("runstats/finished") is None:
        raise ValueError("the report is not a finished nmap run")
    up = []
    for host in root.iter("host"):
        status = host.find("status")
        if status is None or status.get("state") != "up":
            continue
        addresses = {a.get("addrtype"): a.get("addr") for a in host.findall("address")}
        if addresses.get("ipv4"):
            up.append({"address": addresses["ipv4"], "mac": addresses.get("mac"), "reason": status.get("reason")})
    return root.get("version", ""), up


def sweep(zones: list[dict[str, Any]], timeout: float) -> tuple[str, list[dict[str, Any]]]:
    """One nmap run over every zone's targets; raises RuntimeError with nmap's word when it fails."""
    return run_nmap(NMAP, read_report, timeout, stdin="\n".join(targets(zones)) + "\n")


def round_lines(round_id: int, zones: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """The JSON lines of one round (module docstring)."""
    started = stamp()
    try:
        version, up = sweep(zones, timeout)
    except RuntimeError as exc:
        return [{"event": "sweep-failed", "round": round_id, "time": stamp(), "zones": [z["name"] for z in zones], "error": str(exc)}]
    finished, lines, found = stamp(), [], []
    for zone in zones:
        subnet = ipaddress.ip_network(zone["subnet"])
        mine = sorted((h for h in up if ipaddress.ip_address(h["address"]) in subnet), key=lambda h: ipaddress.ip_address(h["address"]))
        lines += [{"event": "host-up", "round": round_id, "time": finished, "zone": zone["name"], **h} for h in mine]
        found.append({"event": "sweep-finished", "round": round_id, "time": finished, "zone": zone["name"], "subnet": str(subnet),
                      "exclude": sorted(zone.get("exclude", []), key=ipaddress.ip_address), "started": started,
                      "up": [h["address"] for h in mine], "nmap": version})
    return lines + found


def load(path: str) -> dict[str, Any]:
    config = json.loads(Path(path).read_text())
    if not isinstance(config.get("zones"), list) or not config["zones"]:
        raise ValueError("zones: a list of at least one {name, subnet, exclude}")
    for i, zone in enumerate(config["zones"]):
        if not isinstance(zone, dict) or not isinstance(zone.get("name"), str):
            raise ValueError(f"zones[{i}]: a mapping with name, subnet and exclude")
        ipaddress.ip_network(zone.get("subnet", ""))
        for a in zone.get("exclude", []):
            ipaddress.ip_address(a)
    for key in ("interval", "timeout"):
        if not isinstance(config.get(key), int | float) or config[key] <= 0:
            raise ValueError(f"{key}: seconds, more than 0")
    if not isinstance(config.get("results"), str):
        raise ValueError("results: the path of the results file")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pacslab-discovery", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except (OSError, ValueError) as exc:
        print(f"pacslab-discovery: {args.config}: {exc}", file=sys.stderr)
        return 2
    while True:
        began = time.monotonic()
        lines = round_lines(int(time.time() * 1000), config["zones"], float(config["timeout"]))
        with open(config["results"], "a", encoding="utf-8") as out:
            out.writelines(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        if args.once:
            return 0 if lines[0]["event"] != "sweep-failed" else 1
        time.sleep(max(1.0, float(config["interval"]) - (time.monotonic() - began)))


if __name__ == "__main__":
    sys.exit(main())
