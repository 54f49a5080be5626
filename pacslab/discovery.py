"""Asset discovery reconciled with the lab definition (C-AST-01, CSF ID.AM-1; C-DET-04, DE.CM-8).

The scanner (roles/scanner) sweeps the zones it may reach with nmap's host discovery and ships
every address that answered to the siem; the siem keeps each zone's newest finished sweep
(``pacslab-siem discovery``). Here each zone of the lab definition is compared both ways with what
its newest sweep found: the addresses no deployed host of the definition has (``unknown``: a
device nobody registered, or one that squats a planned host's address or the segmentation check's
probe address) and the deployed hosts that did not answer (``missing``: down, or not where the
definition puts them). The fw counts as each zone's host at its address there; an address the
sweep did not try (the Docker bridge's, the fw's behind the fw: its ``exclude``) is expected of nobody.

Passive discovery is reconciled beside it, in every zone, swept or not: the addresses of the zone
that the fw dropped, the IDS sensor recorded or a TLS front or the legacy zone's overlay gateway
logged a connection of in the last hour and that no host of the definition has (``seen``,
``pacslab-siem discovery``), such as a device that only uses a flow its whole zone has, which no
sweep reaches when the scanner may not reach its zone.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .topology import Lab

NOT_SWEPT = "no flow lets the scanner reach it (roles/scanner sweeps its own zone and each zone a flow opens to it on any port)"


def expected(lab: Lab, zone: str) -> dict[str, str]:
    """Address -> host of what should answer a sweep of ``zone``: its deployed hosts and the fw."""
    found = {str(h.address): h.name for h in lab.deployed_hosts() if h.zone == zone and h.address is not None}
    found[str(lab.zones[zone].router)] = lab.router.name
    return found


def _seen_in(lab: Lab, name: str, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The passive finds of zone ``name``: those in its subnet that no host of the definition has,
    nor the fw, nor the Docker bridge (the engine's host, which no sweep tries either), each
    {address, seen_by {source: events}, first, last, probe (the segmentation check's stand-in
    address)}, sorted numerically."""
    zone = lab.zones[name]
    known = {str(h.address) for h in lab.hosts.values() if h.address is not None} | {str(zone.router), str(zone.gateway)}
    rows: dict[str, dict[str, Any]] = {}
    for s in seen:
        if s.get("zone") != name or s["address"] in known or ipaddress.ip_address(s["address"]) not in zone.subnet:
            continue
        row = rows.setdefault(s["address"], {"address": s["address"], "seen_by": {}, "first": s["first"], "last": s["last"],
                                             "probe": s["address"] == str(zone.probe)})
        for source, events in s["seen_by"].items():  # several siems: one row, their counts added
            row["seen_by"][source] = row["seen_by"].get(source, 0) + events
        row["first"], row["last"] = min(row["first"], s["first"]), max(row["last"], s["last"])
    return sorted(rows.values(), key=lambda r: ipaddress.ip_address(r["address"]))


def reconcile(lab: Lab, sweeps: dict[str, dict[str, Any]], seen: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per zone of the lab definition, in its order. ``sweeps`` maps a zone to its newest
    finished sweep ({"up": [addresses], "exclude": [addresses not tried], "finished": RFC 3339, ...},
    pacslab-siem discovery); ``seen``, the passive finds ([{address, zone, seen_by, first, last}], its "seen").
    A row: zone, subnet, swept (bool), started and finished (None if not swept),
    expected {address: host} (what a sweep of the zone should find), unknown [addresses], missing
    [{host, address}], reason (why a zone was not swept, else None), and seen (_seen_in).
    Addresses sort numerically; a sweep's address outside its zone's subnet is ignored."""
    rows = []
    for name, zone in lab.zones.items():
        want = expected(lab, name)
        sweep = sweeps.get(name)
        passive = _seen_in(lab, name, seen or [])
        if sweep is None:
            rows.append({"zone": name, "subnet": str(zone.subnet), "swept": False, "started": None, "finished": None, "expected": want,
                         "unknown": [], "missing": [], "reason": NOT_SWEPT, "seen": passive})
            continue
        want = {a: h for a, h in want.items() if a not in set(sweep.get("exclude", []))}
        up = {a for a in sweep.get("up", []) if ipaddress.ip_address(a) in zone.subnet}
        rows.append({
            "zone": name, "subnet": str(zone.subnet), "swept": True, "started": sweep.get("started"), "finished": sweep.get("finished"),
            "expected": want,
            "unknown": sorted(up - set(want), key=ipaddress.ip_address),
            "missing": [{"host": want[a], "address": a} for a in sorted(set(want) - up, key=ipaddress.ip_address)],
            "reason": None,
            "seen": passive,
        })
    return rows
