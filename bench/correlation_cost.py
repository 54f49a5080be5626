#!/usr/bin/env python3
"""Correlation cost benchmark (issue 13, C-DET-06): what one evaluation of a correlation over fw
drops costs the siem as they pile up, found two ways over the same store:

  pysigma   the query pySigma's SQLite backend compiles for the correlation (it compares every
            match with every other one in the window; a temporal correlation nests the query of
            the counting one it names)
  siem      the siem's own (pacslab_siem: _counting_windows, the base rule's query, then one sorted
            pass per source address; _sequences, the same for each counting step, then a bisection
            per match), which the evaluator runs since December 2026

--rule port-scan (a value_count correlation) or compromised-modality (a temporal one over
unknown-ae and port-scan; each source address also offers one unknown AE title at the start).
The drops are synthetic and in memory (no lab needed): --drops per size, spread over one minute
from 25 addresses of the modality zone to 20 of the datacenter on 29 ports, as a burst of the lab's
own segmentation check looks. Reported per size: each way's seconds (best of --repeat) and the
ratio pysigma / siem. The unit suite checks on random events that both find the same events
(port-scan), and the same groups, the siem's events holding the query's (compromised-modality)
(tests/unit/test_detections.py). A benchmark, not a test: it asserts nothing; results are appended
to bench/results/correlation_cost.jsonl.

    python3 bench/correlation_cost.py [--rule port-scan] [--drops 500 1000 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import detections  # noqa: E402

RESULTS = REPO / "bench" / "results" / "correlation_cost.jsonl"
# The siem's program as it runs on the siem (standard library only), loaded from its file.
_spec = importlib.util.spec_from_file_location("pacslab_siem", REPO / "roles" / "siem" / "files" / "pacslab_siem.py")
assert _spec and _spec.loader
siem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(siem)
T0 = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


def store(drops: int, unknown_aes: bool = False) -> sqlite3.Connection:
    db = siem.connect(Path(":memory:"))
    rng = random.Random(drops)
    for source in range(25) if unknown_aes else ():
        siem.store(db, {"host": "pacs", "source": "orthanc-log", "event_type": "dicom-association-received", "calling_ae": "EVILMOD",
                        "outcome": "unknown-calling-ae", "src_ip": f"10.77.30.{source}",
                        "time": T0.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
    for _ in range(drops):
        at = T0 + timedelta(seconds=rng.uniform(0, 60))
        siem.store(db, {"source": "fw-drops", "event_type": "fw-drop", "outcome": "deny", "proto": "tcp",
                        "src_ip": f"10.77.30.{rng.randrange(25)}", "dst_ip": f"10.77.40.{rng.randrange(20)}",
                        "dst_port": str(rng.randrange(1, 30)), "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
    fields = ", ".join(siem.FIELDS)
    db.execute(f"CREATE TEMP TABLE logs (id INTEGER PRIMARY KEY, timestamp TEXT, {fields})")
    db.execute(f"INSERT INTO temp.logs SELECT id, time, {fields} FROM events")
    return db


def best(repeat: int, run: Any) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rule", choices=["port-scan", "compromised-modality"], default="port-scan")
    args = parser.parse_args()
    rule = {r["name"]: r for r in detections.compile_rules()}[args.rule]
    own = siem._sequences if rule["steps"] else siem._counting_windows
    sizes = []
    for drops in args.drops:
        db = store(drops, unknown_aes=bool(rule["steps"]))
        pysigma = best(args.repeat, lambda db=db: db.execute(rule["sql"]).fetchall())
        ours = best(args.repeat, lambda db=db: own(db, rule))
        sizes.append({"drops": drops, "pysigma_seconds": round(pysigma, 4), "siem_seconds": round(ours, 4),
                      "ratio": round(pysigma / ours, 1)})
    result = {"rule": args.rule, "repeat": args.repeat, "sizes": sizes}
    print(json.dumps(result, indent=1))
    append_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
