"""The lab definition for a firewall team, without Docker: the nftables ruleset the fw loads, and
the flow matrix as CSV and Markdown (`pacslab export`).

The flow matrix has one row per flow of ``lab_flows`` (group_vars/all/flows.yml), routed flows
first: id, from, from_addresses, to, to_address, proto, ports ("any" or "2762,104"), purpose, csf
(CSF v1.1 subcategories, ";"-separated in CSV), enforced_by ("fw" for a flow between zones; "zone"
for one inside a zone, which never crosses the fw and needs the hospital's own enforcement there)
and service ("planned" when the destination's service comes later).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .firewall import endpoint_addresses, render
from .topology import Lab

COLUMNS = ("id", "from", "from_addresses", "to", "to_address", "proto", "ports", "purpose", "csf", "enforced_by", "service")


def flow_rows(lab: Lab) -> list[dict[str, Any]]:
    """One dict per flow (COLUMNS; lists for from, from_addresses and csf), routed flows first."""
    rows = []
    for f in lab.all_flows:
        rows.append({
            "id": f.id,
            "from": [str(s) for s in f.sources],
            "from_addresses": endpoint_addresses(lab, f.sources),
            "to": str(f.dest),
            "to_address": endpoint_addresses(lab, [f.dest])[0],
            "proto": f.proto,
            "ports": ",".join(map(str, f.ports)) if f.ports is not None else "any",
            "purpose": f.purpose,
            "csf": list(f.csf),
            "enforced_by": "zone" if f.intra_zone else "fw",
            "service": "planned" if f.planned else "",
        })
    return rows


def _cell(value: Any, sep: str) -> str:
    return sep.join(value) if isinstance(value, list) else str(value)


def flows_csv(lab: Lab) -> str:
    """The flow matrix as RFC 4180 CSV with a header row; list cells joined with ";"."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in flow_rows(lab):
        writer.writerow([_cell(row[c], ";") for c in COLUMNS])
    return buf.getvalue()


def flows_markdown(lab: Lab) -> str:
    """The flow matrix as a Markdown table ("|" in a cell escaped)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in flow_rows(lab):
        lines.append("| " + " | ".join(_cell(row[c], ", ").replace("|", "\\|") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def export(lab: Lab, out: Path) -> list[Path]:
    """Write ruleset.nft, flows.csv and flows.md into ``out`` (created); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"ruleset.nft": render(lab), "flows.csv": flows_csv(lab), "flows.md": flows_markdown(lab)}
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / name for name in files]
