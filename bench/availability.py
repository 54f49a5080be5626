#!/usr/bin/env python3
"""Availability benchmark (C-PRT-05): what an attack from one modality costs another one's store.

One modality (the second with a certificate, mod-mr in the reference lab) attacks the PACS while
the other (mod-ct) stores a series; each attack is measured against the same store with no attack,
alternating, over --rounds:

  none      mod-ct stores --images CT instances on one association
  flood     the same, while mod-mr opens --flood associations at once and holds each --hold s
            (the fw limits new DICOM connections per source; the front gives each its own thread)
  stall     the same, while mod-mr holds --stalls connections that sent the first bytes of a TLS
            handshake and then nothing (the front cuts each after orthanc_dicom_front_timeout)

Reported: the median store time of each shape and its ratio to "none" (1.0: the attack costs the
other modality nothing). A benchmark, not a test: it asserts nothing; results are appended to
bench/results/availability.jsonl. The series stored are deleted from the PACS and the VNA.

    python3 bench/availability.py [--lab inventories/default] [--rounds 3] [--images 20] [--flood 40] [--hold 5] [--stalls 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "availability.jsonl"
PATIENT = "BENCH^AVAILABILITY"
STABLE_WAIT = 15  # seconds: the PACS forwards the last series to the VNA once it is stable

# Runs inside the attacking modality: N connections that each send a ClientHello's first bytes, then
# wait (the fw lets a source hold only a few: the others time out, which the attacker does not mind).
STALLER = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[3])):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    except OSError:
        continue
    s.sendall(bytes.fromhex("1603010200010001fc0303"))
    socks.append(s)
time.sleep(float(sys.argv[4]))
print(len(socks))
"""


def store(lab: Any, host: str, images: int, accession: str) -> float:
    out = im.dicomsim(lab, host, "store", "--images", str(images), "--accession", accession, "--patient-name", PATIENT)
    if len(out["stored"]) != images:
        raise SystemExit(f"{host}: the store did not complete: {json.dumps(out)[:400]}")
    return float(out["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="inventories/default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--flood", type=int, default=40)
    parser.add_argument("--hold", type=float, default=5)
    parser.add_argument("--stalls", type=int, default=10)
    args = parser.parse_args()
    lab = load_lab(args.lab)
    stations = [h for h in lab.group("modalities") if h.deployed and h.ae_title and h.image == "dicom"
                and lab.host_vars.get(h.name, {}).get("pki_enrol", True) is not False]
    victim, attacker = stations[0].name, stations[1].name
    pacs = next(h for h in lab.group("pacs_servers") if h.deployed)
    times: dict[str, list[float]] = {"none": [], "flood": [], "stall": []}
    store(lab, victim, 2, "BENCH-AV-WARM")
    with ThreadPoolExecutor(1) as pool:
        for r in range(args.rounds):
            for shape in ("none", "flood", "stall") if r % 2 == 0 else ("stall", "flood", "none"):
                attack: Any = None
                if shape == "flood":
                    attack = pool.submit(im.dicomsim, lab, attacker, "flood", "--count", str(args.flood), "--hold", str(args.hold))
                elif shape == "stall":
                    attack = pool.submit(im.exec_in, lab, attacker, "python3", "-c", STALLER, str(pacs.address), str(pacs.dicom_port),
                                         str(args.stalls), str(args.hold))
                if attack is not None:
                    time.sleep(0.5)  # the attack is under way
                times[shape].append(store(lab, victim, args.images, f"BENCH-AV-{shape}-{r}"))
                if attack is not None:
                    attack.result()
                time.sleep(2)
    time.sleep(STABLE_WAIT)
    removed = 0
    for host in ("pacs", "vna"):
        for study in im.orthanc(lab, host, "/tools/find", "POST", json.dumps({"Level": "Study", "Query": {"PatientName": PATIENT}})):
            im.orthanc(lab, host, f"/studies/{study}", "DELETE")
            removed += 1
    medians = {shape: round(statistics.median(t), 3) for shape, t in times.items()}
    append_result(RESULTS, {
        "victim": victim, "attacker": attacker, "images": args.images, "rounds": args.rounds,
        "flood": {"count": args.flood, "hold_s": args.hold}, "stalls": args.stalls,
        "store_seconds_median": medians,
        "flood_over_none": round(medians["flood"] / medians["none"], 3),
        "stall_over_none": round(medians["stall"] / medians["none"], 3),
        "bench_studies_removed": removed,
    })
    print(f"\n{'attack':<7} {'store s':>8} {'ratio':>6}")
    for shape, m in medians.items():
        print(f"{shape:<7} {m:>8.2f} {m / medians['none']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
