#!/usr/bin/env python3
"""HL7 order benchmark: ORM^O01 orders through the RIS's TLS front, each answered by its ACK.

From the order-entry station (ws-tech), with its own certificate, through the fw and stunnel to the
listener (pacslab/orders.py: python-hl7 parsing, the worklist file written and hard-linked into
place). Two shapes, each repeated for --rounds:

  one connection   --orders orders sent one after the other on one MLLP connection
  N connections    --connections connections at once, --orders / N orders each

Latency is per order, from the first byte sent to the whole ACK read (p50/p95); throughput is
orders per second over the shape's wall time. Every order is scheduled for a station AE title that
no modality has (BENCH01), so no modality acquires them, and their worklist files are removed at
the end. A benchmark, not a test: it asserts nothing; results are appended to
bench/results/hl7_orders.jsonl.

    python3 bench/hl7_orders.py [--lab inventories/default] [--orders 200] [--connections 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "hl7_orders.jsonl"
STATION = "BENCH01"  # no modality has it: nobody acquires the orders

# Runs inside ws-tech: orders.py's own builder and TLS sender, timed per order.
AGENT = """
import json, sys, threading, time
sys.path.insert(0, "/usr/local/lib/pacslab")
import orders
cfg = json.load(open("/etc/pacslab/dicom.json"))
ris, tls = cfg["peers"]["ris-hl7"], cfg["tls"]
prefix, total, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
latencies, acks = [], []
lock = threading.Lock()

def run(c):
    sock = orders._open(ris["host"], int(ris["port"]), tls["trusted"], tls["cert"], tls["key"])
    with sock:
        for i in range(c, total, conns):
            acc = f"{prefix}{i}"
            msg = orders.encode(orders.build_orm({"patient_id": f"PB{i}", "patient_name": "BENCH^ORDER", "accession": acc,
                                                  "modality": "CT", "station": sys.argv[4], "procedure": "bench"}, acc))
            t0 = time.monotonic()
            ack = orders.read_ack(orders._exchange(sock, msg))
            with lock:
                latencies.append((time.monotonic() - t0) * 1000)
                acks.append(ack["ack"])

start = time.monotonic()
threads = [threading.Thread(target=run, args=(c,)) for c in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"seconds": time.monotonic() - start, "latency_ms": latencies, "acks": acks}))
"""


def shape(lab: Any, sender: str, prefix: str, total: int, conns: int) -> dict[str, Any]:
    text = im.exec_in(lab, sender, "python3", "-c", AGENT, prefix, str(total), str(conns), STATION, timeout=600)
    out: dict[str, Any] = json.loads(text.splitlines()[-1])
    if out["acks"].count("AA") != total:
        raise SystemExit(f"not every order was accepted: {sorted(set(out['acks']))}")
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    latencies = sorted(ms for r in runs for ms in r["latency_ms"])
    return {
        "orders_per_s": round(statistics.median(len(r["acks"]) / r["seconds"] for r in runs), 1),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "orders": sum(len(r["acks"]) for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="inventories/default")
    parser.add_argument("--orders", type=int, default=200, help="orders per round and shape")
    parser.add_argument("--connections", type=int, default=4, help="connections of the parallel shape")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lab = load_lab(args.lab)
    sender = str((lab.host_vars.get("ris", {}).get("ris_hl7_senders") or ["ws-tech"])[0])
    ris = next(h.name for h in lab.group("ris_servers") if h.deployed)
    stamp = dt.datetime.now(dt.UTC).strftime("%H%M%S")
    runs: dict[str, list[dict[str, Any]]] = {"one connection": [], f"{args.connections} connections": []}
    try:
        for r in range(args.rounds):
            runs["one connection"].append(shape(lab, sender, f"B{stamp}{r}S", args.orders, 1))
            runs[f"{args.connections} connections"].append(shape(lab, sender, f"B{stamp}{r}P", args.orders, args.connections))
    finally:
        im.exec_in(lab, ris, "sh", "-c", f"rm -f /var/lib/orthanc/worklists/B{stamp}*.wl")
    results = {name: summary(rs) for name, rs in runs.items()}
    append_result(RESULTS, {"orders_per_round": args.orders, "rounds": args.rounds, "shapes": results})
    print(f"\n{'shape':<16} {'orders/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for name, row in results.items():
        print(f"{name:<16} {row['orders_per_s']:>9.1f} {row['latency_ms_p50']:>8.1f} {row['latency_ms_p95']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
