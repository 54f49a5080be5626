#!/usr/bin/env python3
"""Alert latency under load (issue 13, C-DET-06): the events per second the lab's SIEM pipeline
sustains before its alert latency doubles.

For each rate of --rates (events per second; 0 is the idle baseline), the bastion (a log source)
sends RFC 5424 messages to the siem over one TLS session with its lab certificate (detection_latency's
FLOOD), paced at that rate from a few seconds before the runs until their last alert, while the vendor
engineer's computer guesses SSH passwords at the bastion --runs times
(detection_latency.py's brute-force run: five wrong passwords, user names of the run). Each run's
latency is the seconds from the fifth failure's end to the ssh-brute-force alert holding the run's
five events. Between two rates the store is let catch up with everything sent (the flood's own
marker counted in the store), so a backlog of one rate does not weigh on the next.

Rates are taken upwards and the bench stops at the first whose p50 is twice the baseline's or more,
or where a run got no alert within detection_latency's WAIT (120 s). Reported per rate: the rate
asked, the rate the sender reached, each run's latency, p50 and max, and the ratio of p50 to the
baseline's p50 (null: a run got no alert). "sustained" is the highest rate below that one,
"doubled_at" that rate (null when none doubled it). A benchmark, not
a test: it asserts nothing; results are appended to bench/results/latency_under_load.jsonl.

    python3 bench/latency_under_load.py [--lab inventories/default] [--rates 0,250,500,1000,2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.detection_latency import BASTION, FLOOD, WAIT, brute_force, count  # noqa: E402
from bench.record import append_result  # noqa: E402
from pacslab.plan import SIEMS, build_plan  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "latency_under_load.jsonl"
WARM = 5  # seconds of flood before the first run of a rate
DRAIN = 600  # seconds the store may take to catch up after a rate


def at_rate(lab: Any, plan: Any, siem: str, rate: int, runs: int) -> dict[str, Any]:
    """The runs' latencies while the bastion floods the siem at ``rate`` events a second (none at 0),
    from WARM seconds before the first run until the last has its alert; then the store catches up."""
    tag = f"bench-load-{secrets.token_hex(3)}"
    sender = None
    if rate:
        target = lab.hosts[siem]
        request = {"address": str(target.address), "port": target.service("syslog-tls").port, "tag": tag, "rate": rate, "count": None}
        sender = subprocess.Popen(["docker", "exec", "-i", lab.container_name(BASTION), "python3", "-c", FLOOD],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert sender.stdin is not None
        sender.stdin.write(json.dumps(request) + "\n")
        sender.stdin.flush()
        time.sleep(WARM)
    latencies: list[float | None] = []
    try:
        for _ in range(runs):
            try:
                latencies.append(brute_force(lab, plan, siem)["from_fifth"])
            except SystemExit:  # no alert within detection_latency's WAIT: the pipeline did not keep up
                latencies.append(None)
                break
    finally:
        if sender is not None:
            out, err = sender.communicate("stop\n", timeout=120)  # a line on its stdin ends the flood
    reached = 0.0
    if sender is not None:
        if sender.returncode != 0:
            raise SystemExit(f"the flood at {rate}/s failed ({sender.returncode}): {err.strip()[-300:]}")
        done = json.loads(out)
        reached = round(done["sent"] / done["seconds"], 1)
        deadline = time.monotonic() + DRAIN
        while count(lab, siem, tag) < done["sent"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"the store did not catch up with the {done['sent']} messages of {rate}/s within {DRAIN} s")
            time.sleep(2)
    got = [x for x in latencies if x is not None]
    step = {"rate": rate, "reached": reached, "runs": [None if x is None else round(x, 2) for x in latencies]}
    if None in latencies:
        step.update(p50=None, max=None, note=f"a run got no alert within {WAIT} s")
    else:
        step.update(p50=round(statistics.median(got), 2), max=round(max(got), 2))
    print(json.dumps(step), file=sys.stderr, flush=True)
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default=str(REPO / "inventories" / "default"))
    parser.add_argument("--rates", default="0,250,500,1000,2000", help="events per second, comma-separated; 0 is the baseline")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        rates = sorted({int(r) for r in args.rates.split(",")} | {0})
    except ValueError:
        parser.error(f"--rates {args.rates!r}: whole events per second, comma-separated")
    if rates[0] < 0 or args.runs < 1:
        parser.error("--rates takes 0 or more events per second and --runs 1 or more")
    lab = load_lab(args.lab)
    plan = build_plan(lab)
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    if not siems:
        raise SystemExit(f"lab {lab.name!r} deploys no siem")
    steps: list[dict[str, Any]] = []
    for rate in rates:  # upwards, until the latency has doubled: a higher rate would only pile up more
        step = at_rate(lab, plan, siems[0], rate, args.runs)
        if step["p50"] is None and not steps:
            raise SystemExit("the idle baseline got no alert: is the siem running?")
        step["ratio"] = None if step["p50"] is None else round(step["p50"] / steps[0]["p50"] if steps else 1.0, 2)
        steps.append(step)
        if step["ratio"] is None or step["ratio"] >= 2:
            break
    base = steps[0]["p50"]
    doubled = steps[-1]["rate"] if steps[-1]["ratio"] is None or steps[-1]["ratio"] >= 2 else None
    sustained = max(s["rate"] for s in steps if s["rate"] != doubled)
    result = {"baseline_p50": base, "steps": steps, "sustained": sustained, "doubled_at": doubled,
              "runs": args.runs, "rules": len(json.loads(im.exec_in(lab, siems[0], "cat", "/etc/pacslab/siem/rules.json")))}
    print(json.dumps(result, indent=1))
    append_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
