#!/usr/bin/env python3
"""Reset benchmark (issue 11): a scenario's reset and a full snapshot restore on a lab holding at
least --studies studies, median of --rounds runs each.

Setup: mod-ct stores studies (one instance each) until the PACS holds --studies (about 0.5 s per
study: one dicomsim process each), and waits until the
VNA holds their copies; then snapshot "bench-reset" is saved. Each round:

  scenario  `scenario run W4` (an image stored, a byte flipped, the integrity job) then the timed
            `scenario reset W4` (the byte flipped back, the image deleted from PACS and VNA, the
            fingerprint compared)
  restore   a 3-instance study stored (so there is something to undo), then the timed `snapshot
            restore bench-reset` (every host's programs stopped, its volumes unpacked, started,
            the fingerprint compared)

Targets on 2 cores: scenario reset < 10 s, snapshot restore < 60 s. A benchmark, not a test: it
asserts nothing; results are appended to bench/results/reset.jsonl. The studies it stored stay (a
lab for workshops holds data); the snapshot is removed.

    python3 bench/reset.py [--lab inventories/default] [--studies 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import scenario as sc  # noqa: E402
from pacslab import snapshot  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "reset.jsonl"
SNAPSHOT = "bench-reset"


def studies(lab, host: str) -> int:
    return int(im.orthanc(lab, host, "/statistics")["CountStudies"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=str(REPO / "inventories" / "default"))
    ap.add_argument("--studies", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lab = load_lab(args.lab)
    missing = args.studies - studies(lab, "pacs")
    if missing > 0:
        print(f"storing {missing} studies from mod-ct ...", flush=True)
        tag = int(time.time()) % 10**6  # each store is a new study (its own Study Instance UID); --repeat adds series to one
        im.exec_in(lab, "mod-ct", "sh", "-c", f'for i in $(seq {missing}); do python3 {im.DICOMSIM} store --images 1 '
                   f'--patient-name BENCH^RESET --accession "BR{tag}-$i" >/dev/null || exit 1; done', timeout=3600)
    im.wait_for("the VNA's copies", lambda: studies(lab, "vna") >= studies(lab, "pacs") or None, timeout=900, every=5)
    held = {h: studies(lab, h) for h in ("pacs", "vna")}
    print(f"holding {held}; saving snapshot {SNAPSHOT}", flush=True)
    meta = snapshot.save(lab, SNAPSHOT, overwrite=True)
    scenario = sc.find(lab, "W4")
    resets, restores, equal = [], [], []
    try:
        for i in range(args.rounds):
            sc.run_scenario(lab, scenario, "defended")
            started = time.monotonic()
            r = sc.reset_scenario(lab, scenario)
            resets.append(time.monotonic() - started)
            im.dicomsim(lab, "mod-ct", "store", "--images", "3", "--accession", f"BRX{i}{int(time.time()) % 10**5}")
            started = time.monotonic()
            s = snapshot.restore(lab, SNAPSHOT)
            restores.append(time.monotonic() - started)
            equal.append(r["equal"] and s["equal"])
            print(f"round {i + 1}: scenario reset {resets[-1]:.1f} s, snapshot restore {restores[-1]:.1f} s, back: {equal[-1]}", flush=True)
    finally:
        snapshot.remove(lab, SNAPSHOT)
    record = append_result(RESULTS, {
        "studies": held, "snapshot_mb": round(sum(p["bytes"] for p in meta["paths"]) / 1e6, 1), "snapshot_save_s": meta["seconds"],
        "scenario_reset_s": [round(x, 1) for x in resets], "snapshot_restore_s": [round(x, 1) for x in restores],
        "median_scenario_reset_s": round(statistics.median(resets), 1), "median_snapshot_restore_s": round(statistics.median(restores), 1),
        "all_back": all(equal),
    })
    print(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
