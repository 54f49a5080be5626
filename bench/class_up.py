#!/usr/bin/env python3
"""Class benchmark (issue 11): `pacslab class up --count N` beside the reference lab, with the images
present, timed; then each student lab's memory (docker stats, one sample) and `class down`, timed.

Target on 2 cores: `class up --count 5` under 15 minutes. A benchmark, not a test: it asserts
nothing; the result is appended to bench/results/class.jsonl. It refuses to start while the lab has a
class (take it down first), and leaves none behind.

    python3 bench/class_up.py [--lab inventories/default] [--count 5] [--hosts FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import classroom, cli  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "class.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=str(REPO / "inventories" / "default"))
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--hosts", help="a class file (Ansible inventory of Docker hosts); default: this machine's engine")
    args = ap.parse_args()
    lab = load_lab(args.lab)
    if classroom.members(lab):
        print(f"lab {lab.name!r} has a class: `pacslab class down` first", file=sys.stderr)
        return 2
    start = time.monotonic()
    rc_up = cli.main(["class", "up", "--count", str(args.count), "--lab", args.lab] + (["--hosts", args.hosts] if args.hosts else []))
    up_s = round(time.monotonic() - start, 1)
    students = classroom.members(lab)
    memory = {}
    for s in students:
        with classroom.on_engine(classroom.engine_of(lab, s)):
            memory[s.name] = classroom.memory_mib(s)
    start = time.monotonic()
    rc_down = cli.main(["class", "down", "--lab", args.lab])
    down_s = round(time.monotonic() - start, 1)
    record = append_result(RESULTS, {"lab": lab.name, "count": args.count, "hosts": args.hosts or "this machine", "class_up_s": up_s,
                                     "class_up_rc": rc_up, "memory_mib": memory, "class_down_s": down_s, "class_down_rc": rc_down})
    print(f"\nclass up --count {args.count}: {up_s} s (rc {rc_up}); memory per lab {memory}; class down: {down_s} s (rc {rc_down})")
    print(f"appended to {RESULTS.relative_to(REPO)}: {record['when']}")
    return 0 if rc_up == 0 and rc_down == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
