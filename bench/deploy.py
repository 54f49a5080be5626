#!/usr/bin/env python3
"""Deploy benchmark: cold up (no images, no lab), warm up (nothing to do), the steady verify, the
lifecycle checks (`verify --lifecycle` less the steady part: timed as the whole run minus the steady
one would double-count, so they run alone, `-m lifecycle`), down.

Each step is timed as a whole (the command a user types) and appended to
bench/results/deploy.jsonl with the machine's core count. A benchmark, not a test: it asserts
nothing about time; it prints the figures next to the targets of the foundation issue.

    python3 bench/deploy.py [--lab PATH] [--skip-cold]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab.plan import ROOTFS_TAG, build_plan  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "deploy.jsonl"
TARGETS = {"cold_up": 300.0, "warm_up": 15.0, "verify": 180.0}  # verify: the steady checks (issue 9: under 3 minutes)


def timed(*args: str) -> tuple[float, int]:
    start = time.monotonic()
    rc = subprocess.run([sys.executable, "-m", "pacslab.cli", *args], cwd=REPO, check=False).returncode
    return time.monotonic() - start, rc


def remove_images(lab_path: str) -> None:
    """Cold means no pacslab image at all: rootfs, base and service images go."""
    plan = build_plan(load_lab(lab_path))
    tags = [ROOTFS_TAG, plan.base.tag] + [i.tag for i in plan.images]
    subprocess.run(["docker", "image", "rm", "-f", *tags], cwd=REPO, check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="inventories/default")
    parser.add_argument("--skip-cold", action="store_true", help="keep images (measure warm up, down, verify only)")
    args = parser.parse_args()

    steps: dict[str, dict[str, float | int]] = {}
    if not args.skip_cold:
        timed("down", "--volumes", "--lab", args.lab)
        remove_images(args.lab)
        seconds, rc = timed("up", "--lab", args.lab)
        steps["cold_up"] = {"seconds": round(seconds, 1), "rc": rc}
    else:
        timed("up", "--lab", args.lab)
    seconds, rc = timed("up", "--lab", args.lab)
    steps["warm_up"] = {"seconds": round(seconds, 1), "rc": rc}
    seconds, rc = timed("verify", "--lab", args.lab, "--", "-q", "-p", "no:cacheprovider")
    steps["verify"] = {"seconds": round(seconds, 1), "rc": rc}
    seconds, rc = timed("verify", "--lifecycle", "--lab", args.lab, "--", "-q", "-p", "no:cacheprovider", "-m", "lifecycle")
    steps["lifecycle"] = {"seconds": round(seconds, 1), "rc": rc}
    seconds, rc = timed("down", "--lab", args.lab)
    steps["down"] = {"seconds": round(seconds, 1), "rc": rc}

    append_result(RESULTS, {"lab": args.lab, "steps": steps})
    for name, step in steps.items():
        target = TARGETS.get(name)
        print(f"{name:<8} {step['seconds']:>7.1f} s  rc={step['rc']}" + (f"  (target < {target:.0f} s)" if target else ""))
    return 0 if all(s["rc"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
