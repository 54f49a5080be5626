#!/usr/bin/env python3
"""Evaluation pass benchmark (issue 13, C-DET-06): what one pass of every detection costs the siem's
evaluator (pacslab_siem.evaluate, every 2 s on the siem) as the events of its look-back pile up,
two ways over the same store:

  copied  every pass copies each look-back from the store into a table without an index, as
          the evaluator did until 7 December 2026 (copied_pass below, kept here to compare)
  kept    the evaluator's own pass (pacslab_siem.evaluate): the look-back is kept from one pass to
          the next (_refresh_window), indexed on the time, source and event type

The events are the benign corpus's (tests/unit/sigma/benign/*.jsonl, recorded from the live lab's
clinical work), repeated to --events per size and spread over the ten minutes a rule per event
reads back; before each timed pass, 2 s of the lab's clinical traffic (--rate events/s) is stored.
No lab is needed. Reported per size: each way's seconds per pass (median of --repeat) and the ratio
copied / kept. The unit suite checks that the kept look-back holds what a copy would
(tests/unit/test_detections.py). A benchmark, not a test: it asserts nothing; results are
appended to bench/results/evaluation_pass.jsonl.

    python3 bench/evaluation_pass.py [--events 5000 15000 30000] [--repeat 5] [--rate 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import detections  # noqa: E402

RESULTS = REPO / "bench" / "results" / "evaluation_pass.jsonl"
CORPUS = sorted((REPO / "tests" / "unit" / "sigma" / "benign").glob("*.jsonl"))
_spec = importlib.util.spec_from_file_location("pacslab_siem", REPO / "roles" / "siem" / "files" / "pacslab_siem.py")
assert _spec and _spec.loader
siem = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(siem)
T0 = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
LOOK_BACK = 600  # seconds: what a rule per event reads back (pacslab_siem._look_back)
PASS_EVERY = 2  # seconds between two passes (roles/siem: evaluate --every 2)


def corpus() -> list[dict[str, Any]]:
    rows = []
    for path in CORPUS:
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def put(db: Any, rows: list[dict[str, Any]], start: datetime, seconds: float) -> None:
    """``rows`` stored with times spread evenly over ``seconds`` from ``start``."""
    for i, row in enumerate(rows):
        at = start + timedelta(seconds=seconds * i / max(len(rows), 1))
        siem.store(db, {k: v for k, v in row.items() if k != "at"} | {"time": siem._stamp(at)})


def copied_pass(db: Any, rules: list[dict[str, Any]], at: datetime) -> None:
    """A pass as the evaluator made it until 7 December 2026: each look-back copied into temp.logs
    (a table, no index), shared by the rules that have it."""
    fields = ", ".join(siem.FIELDS)
    copied = None
    for rule in sorted(rules, key=siem._look_back):
        if siem._look_back(rule) != copied:
            db.execute("DROP TABLE IF EXISTS temp.logs")
            db.execute(f"CREATE TEMP TABLE logs (id INTEGER PRIMARY KEY, timestamp TEXT, {', '.join(f'{f} TEXT' for f in siem.FIELDS)})")
            db.execute(f"INSERT INTO temp.logs SELECT id, time, {fields} FROM events WHERE time >= ?",
                       (siem._stamp(at - timedelta(seconds=siem._look_back(rule))),))
            copied = siem._look_back(rule)
        siem._evaluate_rule(db, rule, {})


def passes(events: int, rate: int, repeat: int, kept: bool, rules: list[dict[str, Any]], rows: list[dict[str, Any]]) -> float:
    """The median seconds of ``repeat`` passes over a look-back of ``events`` events."""
    db = siem.connect(Path(":memory:"))
    put(db, [rows[i % len(rows)] for i in range(events)], T0, LOOK_BACK)
    at = T0 + timedelta(seconds=LOOK_BACK)
    run = (lambda when: siem.evaluate(db, rules, {}, at=when)) if kept else (lambda when: copied_pass(db, rules, when))
    run(at)  # the first pass raises what the corpus raises (nothing), and builds the kept look-back
    times = []
    for n in range(repeat):
        new = [rows[(events + n * rate * PASS_EVERY + i) % len(rows)] for i in range(rate * PASS_EVERY)]
        put(db, new, at, PASS_EVERY)
        at += timedelta(seconds=PASS_EVERY)
        start = time.perf_counter()
        run(at)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[5000, 15000, 30000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=int, default=100, help="events/s stored between two passes")
    args = parser.parse_args()
    rules, rows = detections.compile_rules(), corpus()
    sizes = []
    for events in args.events:
        copied = passes(events, args.rate, args.repeat, False, rules, rows)
        kept = passes(events, args.rate, args.repeat, True, rules, rows)
        sizes.append({"events": events, "copied_seconds": round(copied, 4), "kept_seconds": round(kept, 4),
                      "ratio": round(copied / kept, 1)})
        print(json.dumps(sizes[-1]), flush=True)
    result = {"rules": len(rules), "rate": args.rate, "repeat": args.repeat, "sizes": sizes}
    append_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
