"""Record the benign corpus from a live lab: the siem's events after a given id, as the unit suite
replays them (tests/unit/test_detections.py, test_no_rule_fires_on_the_benign_corpus).

    python tests/unit/sigma/benign/record.py --lab inventories/default --since-id N --out tests/unit/sigma/benign/NAME.jsonl

Take N from the siem's store before the normal work starts (the last id), run the work, then
record. clinical-workflow.jsonl: three runs of `pytest -p pacslab.pytest_plugin
tests/integration/test_imaging.py tests/integration/test_browser.py -k "workflow_delivers or
copies_match or open_the_viewer"` (orders, acquisitions, forwarding with both sides' audit messages,
retrieval, the viewer with the radiologist's sign-in at the IdP: password, code, User Authentication;
the proxy's access log; the scanner's sweeps meanwhile), with an integrity pass of the PACS and the
VNA (POST /pacslab/verify) after the second; recorded again on 5 December, after the RIS's HL7
record and front, the PACS's DICOM TLS front and the DICOM nodes' own logs became sources.
clinical-workflow-2026-12-06.jsonl: the same three runs and integrity pass on 6 December, once the
directory's slapd log and the overlay gateway's tunnels were sources (the IdP's binds for each
sign-in, marked relayed; the legacy device's connections). Record on a siem that has caught up:
events a busy siem stores late (a segmentation run's drops) get ids after N. Each
line is one event of the siem's schema without its store id, with ``at``: seconds after the first
event. Every lab secret is redacted (pacslab.redact); the lab's patients are synthetic."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from pacslab.docker import docker
from pacslab.plan import SIEM_USER, SIEMS
from pacslab.redact import redact_tree, secret_values
from pacslab.topology import load_lab


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=Path, default=Path("inventories/default"))
    p.add_argument("--since-id", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    lab = load_lab(args.lab)
    siem = next((h for h in lab.deployed_hosts() if SIEMS in h.groups), None)
    if siem is None:
        print(f"lab {lab.name!r} deploys no siem", file=sys.stderr)
        return 2
    proc = docker("exec", "-u", SIEM_USER, lab.container_name(siem.name), "pacslab-siem", "events", "--json",
                  "--since-id", str(args.since_id), timeout=120)
    events = redact_tree(json.loads(proc.stdout), secret_values())
    if not events:
        print("no events after that id", file=sys.stderr)
        return 1
    start = min(datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events)
    with args.out.open("w") as out:
        for e in sorted(events, key=lambda e: e["id"]):
            at = (datetime.fromisoformat(e["time"].replace("Z", "+00:00")) - start).total_seconds()
            row = {"at": round(at, 3)} | {k: v for k, v in e.items() if k not in ("id", "time", "received")}
            out.write(json.dumps(row, sort_keys=True) + "\n")
    print(f"{len(events)} events -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
