#!/usr/bin/env python3
"""DICOM ingest benchmark: what the controls cost a modality storing to the PACS.

Three paths, measured in one run, alternating (the order turns every round):

  controlled  mod-ct -> pacs in the reference lab: DICOM TLS with device certificates, through
              the fw, AE title and host checks, MD5 on attachments, the plugin (events, forward
              of stable studies to the VNA).
  baseline    mod-ct -> pacs in bench/labs/ingest-baseline: the same Orthanc and PostgreSQL
              build, the same simulator, the modality in the PACS's zone, the controls off.
  sink        mod-ct -> a bare pynetdicom storage SCP in the baseline PACS's network namespace
              that keeps nothing: the ceiling of the path.

Each sample is one association storing images x repeat synthetic CT instances (512x512, 16 bit)
and is timed by the simulator from association request to release. Throughput is instances/s
and MB/s of pixel data; latency is per C-STORE. Medians over the rounds are reported with the
ratios controlled/baseline (target: at least 0.85) and baseline/sink. A benchmark, not a test:
it asserts nothing; results are appended to bench/results/dicom_ingest.jsonl.

    python3 bench/dicom_ingest.py [--lab inventories/default] [--rounds 5] [--images 4] [--repeat 10]
                                  [--keep-baseline]

The reference lab is brought up (or left as it is) with `pacslab up`; the baseline lab is
brought up next to it and removed at the end with its volumes, unless --keep-baseline. The
studies the benchmark stored in the reference lab are deleted from the PACS and the VNA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab.docker import docker  # noqa: E402
from pacslab.plan import build_plan  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import Lab, load_lab  # noqa: E402

BASELINE = REPO / "bench" / "labs" / "ingest-baseline"
RESULTS = REPO / "bench" / "results" / "dicom_ingest.jsonl"
TARGET_RATIO = 0.85
PATIENT = "BENCH^INGEST"
STABLE_WAIT = 20  # seconds: orthanc_stable_age (10) and the forward itself


def pacslab(*args: str) -> None:
    rc = subprocess.run([sys.executable, "-m", "pacslab.cli", *args], cwd=REPO, check=False).returncode
    if rc != 0:
        raise SystemExit(f"pacslab {' '.join(args)} failed (exit {rc}); nothing was measured")


def start_sink(baseline: Lab) -> str:
    """The bare SCP runs from the dicom image, sharing the baseline PACS's address."""
    image = next(i.tag for i in build_plan(baseline).images if i.name == "dicom")
    port = baseline.hosts["pacs"].service("sink").port
    name = f"{baseline.prefix}-sink"
    docker("rm", "-f", name, check=False)
    docker(
        "run", "-d", "--rm", "--name", name, "--label", f"pacslab.lab={baseline.name}",
        "--network", f"container:{baseline.container_name('pacs')}",
        image, "python3", "-c", (REPO / "pacslab" / "dicomsim.py").read_text(), "serve-sink", "--port", str(port),
    )
    return name


def sample(lab: Lab, peer: str, images: int, repeat: int, accession: str) -> dict[str, Any]:
    out = im.dicomsim(
        lab, "mod-ct", "store", "--peer", peer, "--images", str(images), "--repeat", str(repeat),
        "--patient-name", PATIENT, "--accession", accession, timeout=600,
    )
    if not out.get("established") or out.get("failed"):
        raise SystemExit(f"{lab.name} {peer}: the store did not complete: {json.dumps(out)[:400]}")
    count, seconds = len(out["stored"]), float(out["seconds"])
    return {
        "instances": count,
        "seconds": seconds,
        "instances_per_s": count / seconds,
        "mb_per_s": out["bytes"] / seconds / 1e6,
        "latency_ms": out["latency_ms"],
    }


def summary(samples: list[dict[str, Any]]) -> dict[str, float]:
    latencies = sorted(ms for s in samples for ms in s["latency_ms"])
    return {
        "instances_per_s": round(statistics.median(s["instances_per_s"] for s in samples), 2),
        "mb_per_s": round(statistics.median(s["mb_per_s"] for s in samples), 2),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "samples": len(samples),
    }


def remove_bench_studies(lab: Lab) -> int:
    removed = 0
    for host in ("pacs", "vna"):
        body = json.dumps({"Level": "Study", "Query": {"PatientName": PATIENT}})
        for study in im.orthanc(lab, host, "/tools/find", "POST", body):
            im.orthanc(lab, host, f"/studies/{study}", "DELETE")
            removed += 1
    return removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="inventories/default", help="the controlled lab (default: the reference lab)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=4, help="images per series")
    parser.add_argument("--repeat", type=int, default=10, help="series per association")
    parser.add_argument("--keep-baseline", action="store_true", help="leave the baseline lab running")
    args = parser.parse_args()

    controlled, baseline = load_lab(args.lab), load_lab(str(BASELINE))
    pacslab("up", "--lab", args.lab)
    pacslab("up", "--lab", str(BASELINE))
    sink = start_sink(baseline)
    paths = {
        "controlled": (controlled, "pacs"),
        "baseline": (baseline, "pacs"),
        "sink": (baseline, "sink"),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    try:
        im.wait_for("the bare SCP", lambda: im.dicomsim(baseline, "mod-ct", "echo", "--peer", "sink").get("established"), timeout=60)
        for name, (lab, peer) in paths.items():  # warm-up: connections, caches, the first PostgreSQL pages
            sample(lab, peer, args.images, 1, f"BENCH-WARM-{name}")
        order = list(paths)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else reversed(order):
                lab, peer = paths[name]
                samples[name].append(sample(lab, peer, args.images, args.repeat, f"BENCH-{r}"))
                time.sleep(1)
    finally:
        docker("rm", "-f", sink, check=False)
        time.sleep(STABLE_WAIT)  # the PACS forwards the last round to the VNA once it is stable
        removed = remove_bench_studies(controlled)
        if not args.keep_baseline:
            pacslab("down", "--volumes", "--lab", str(BASELINE))

    results = {name: summary(s) for name, s in samples.items()}
    ratio = results["controlled"]["instances_per_s"] / results["baseline"]["instances_per_s"]
    ceiling = results["baseline"]["instances_per_s"] / results["sink"]["instances_per_s"]
    append_result(RESULTS, {
        "per_sample": {"images": args.images, "repeat": args.repeat, "instances": args.images * args.repeat},
        "rounds": args.rounds,
        "paths": results,
        "controlled_over_baseline": round(ratio, 3),
        "baseline_over_sink": round(ceiling, 3),
        "bench_studies_removed": removed,
    })

    print(f"\n{'path':<11} {'inst/s':>8} {'MB/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for name, r in results.items():
        print(f"{name:<11} {r['instances_per_s']:>8.1f} {r['mb_per_s']:>7.1f} {r['latency_ms_p50']:>8.1f} {r['latency_ms_p95']:>8.1f}")
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"\ncontrolled / baseline = {ratio:.2f} ({verdict} the target of {TARGET_RATIO:.2f})")
    print(f"baseline (Orthanc) / bare pynetdicom SCP = {ceiling:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
