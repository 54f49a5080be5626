#!/usr/bin/env python3
"""Login and retrieval benchmark (issue 12, C-ACC-07, C-ACC-03): what multi-factor sign-in and the
PACS's permission table cost the person.

login      --runs times, a new headless chromium on the remote radiologist's computer (internet
           zone, pacslab.probes.browser) opens the image viewer on a study's series through the
           proxy, signs in at the IdP (password, then a TOTP code) and waits until the viewer has
           drawn the image: milliseconds from the first navigation to signed in (back at the proxy)
           and to the image displayed, p50 and p95. One person signs in each time; the IdP takes a
           code once (RFC 6238 5.2), so a run waits for the next 30-second step when it must (not
           counted).
retrieval  DICOMweb (PS3.18 10.4) through the proxy with one radiologist's session, from the same
           computer: the whole study (WADO-RS, multipart, --images CT instances) --fetches times,
           and each instance alone, --fetches times (many small requests: where a per-request
           filter would show),
           with the PACS's permission table deciding every request ("filtered") and with the PACS's
           HTTP filter not registered at all ("unfiltered": its plugin loaded without
           PacslabPermissions, the proxy and everything else as they are), alternating over
           --rounds. Reported: MB/s and instances/s, median per shape, and filtered/unfiltered
           (target: at least 0.9).

The unfiltered rounds change the PACS: its Orthanc restarts with PacslabPermissions empty, and
afterwards with its own configuration again, byte for byte (checked; `pacslab up` would restore it
too). Never run it on a lab people use. A benchmark, not a test: it asserts nothing; results are
appended to bench/results/login.jsonl. The study it stored is deleted from the PACS and the VNA.

    python3 bench/login.py [--lab inventories/default] [--runs 5] [--rounds 5] [--images 20] [--fetches 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.record import append_result  # noqa: E402
from pacslab import people  # noqa: E402
from pacslab.plan import build_plan  # noqa: E402
from pacslab.probes import browser, oidc  # noqa: E402
from pacslab.probes import imaging as im  # noqa: E402
from pacslab.topology import Lab, load_lab  # noqa: E402

RESULTS = REPO / "bench" / "results" / "login.jsonl"
CLIENT = "remote-rad"
PATIENT = "BENCH^LOGIN"
CONFIG = "/etc/pacslab/orthanc/orthanc.json"
STABLE_WAIT = 15  # seconds: the PACS forwards the study to the VNA once it is stable

# Runs on the client: each URL fetched with the session's cookies, the body read to its end;
# {seconds, bytes, statuses} for the whole list. The session cookie arrives on stdin.
FETCH = r"""
import json, ssl, sys, time, urllib.request
req = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile="/etc/pacslab/tls/root.pem")
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
size, statuses = 0, {}
start = time.monotonic()
for url in req["urls"]:
    r = urllib.request.Request(url, headers={"Cookie": req["cookie"], "Accept": req["accept"]})
    with opener.open(r, timeout=60) as answer:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        while chunk := answer.read(1 << 20):
            size += len(chunk)
print(json.dumps({"seconds": time.monotonic() - start, "bytes": size, "statuses": statuses}))
"""


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99), linear between the closest ranks (the statistics module's inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def fetch(lab: Lab, cookie: str, urls: list[str], accept: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(im.exec_in(lab, CLIENT, "python3", "-c", FETCH, input=json.dumps(
        {"urls": urls, "cookie": cookie, "accept": accept}), timeout=600))
    if set(out["statuses"]) != {"200"}:  # JSON keys
        raise SystemExit(f"retrieval answered {out['statuses']}, not 200 only")
    return out


def set_filter(lab: Lab, pacs: str, original: str, on: bool) -> None:
    """The PACS's Orthanc with its own configuration (on), or with PacslabPermissions empty (its
    plugin registers no HTTP filter); restarted, and back when its REST API answers."""
    config = json.loads(original)
    if not on:
        config["PacslabPermissions"] = ""
    im.exec_in(lab, pacs, "sh", "-c", f"cat > {CONFIG}", input=original if on else json.dumps(config, indent=2))
    im.exec_in(lab, pacs, "supervisorctl", "restart", "orthanc")
    im.wait_for("the PACS's REST API", lambda: _answers(lab, pacs), timeout=60, every=1)


def _answers(lab: Lab, pacs: str) -> bool | None:
    try:
        im.orthanc(lab, pacs, "/system")
    except RuntimeError:
        return None
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="inventories/default")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--fetches", type=int, default=5)
    args = parser.parse_args()
    lab = load_lab(args.lab)
    plan = build_plan(lab)
    rp = next(h for h in lab.group("reverse_proxies") if h.deployed).name
    idp = next(h for h in lab.group("idp_servers") if h.deployed).name
    pacs = next(h for h in lab.group("pacs_servers") if h.deployed).name
    device = next(h for h in lab.group("modalities") if h.deployed and h.zone == "modality").name
    person = next(p for p in lab.people if p.status() == "enabled" and "radiologist" in p.roles).name
    password = people.password(plan.secrets_dir, person)

    accession = f"BENCH-LOGIN-{int(time.time())}"
    im.dicomsim(lab, device, "store", "--images", str(args.images), "--modality", "CT", "--accession", accession, "--patient-name", PATIENT)
    [study] = im.wait_for(f"{accession} on the PACS", lambda: im.find_study(lab, pacs, accession), timeout=60)
    record = im.orthanc(lab, pacs, f"/studies/{study}")
    [series] = record["Series"]
    study_uid = record["MainDicomTags"]["StudyInstanceUID"]
    viewer = f"https://{rp}/pacs/web-viewer/app/viewer.html?series={series}"

    signed_in, displayed = [], []
    for run in range(args.runs):
        code = oidc.fresh_code(lab, idp, plan.secrets_dir, person)
        result = browser.open_page(lab, CLIENT, viewer, user=person, password=password, code=code)
        if result["viewer"] is None:
            raise SystemExit(f"run {run}: the viewer did not show the study: {result['error'] or result['final']}")
        signed_in.append(result["signed_in_ms"])
        displayed.append(result["displayed_ms"])
        print(f"login {run + 1}/{args.runs}: signed in {result['signed_in_ms']} ms, image displayed {result['displayed_ms']} ms", flush=True)

    # one session for the retrieval (the proxy's cookies, as the browser would hold them)
    session = oidc.browse(lab, CLIENT, f"https://{rp}/dicom-web/studies?limit=1", user=person, password=password,
                          code=oidc.fresh_code(lab, idp, plan.secrets_dir, person), keep=True)
    cookie = oidc.session_cookie(session)
    base = f"https://{rp}/dicom-web/studies/{study_uid}"
    instances = [f"{base}/series/{s['0020000E']['Value'][0]}/instances/{s['00080018']['Value'][0]}"
                 for s in json.loads(im.exec_in(lab, CLIENT, "python3", "-c", FETCH_JSON, input=json.dumps(
                     {"url": f"{base}/instances", "cookie": cookie})))]
    original = im.exec_in(lab, pacs, "cat", CONFIG)
    digest = hashlib.sha256(original.encode()).hexdigest()
    study_mb_s: dict[str, list[float]] = {"filtered": [], "unfiltered": []}
    instances_s: dict[str, list[float]] = {"filtered": [], "unfiltered": []}
    accept = 'multipart/related; type="application/dicom"'
    try:
        for r in range(args.rounds):
            for shape in ("filtered", "unfiltered") if r % 2 == 0 else ("unfiltered", "filtered"):
                set_filter(lab, pacs, original, shape == "filtered")
                fetch(lab, cookie, [base], accept)  # warm: the files in the page cache for both shapes
                whole = fetch(lab, cookie, [base] * args.fetches, accept)
                each = fetch(lab, cookie, instances * args.fetches, accept)
                study_mb_s[shape].append(whole["bytes"] / whole["seconds"] / 1e6)
                instances_s[shape].append(len(instances) * args.fetches / each["seconds"])
                print(f"round {r + 1} {shape:<10}: study {study_mb_s[shape][-1]:.1f} MB/s, instances {instances_s[shape][-1]:.1f}/s", flush=True)
    finally:
        set_filter(lab, pacs, original, True)
        restored = hashlib.sha256(im.exec_in(lab, pacs, "cat", CONFIG).encode()).hexdigest()
        if restored != digest:
            print(f"the PACS's configuration differs from before the benchmark: run `pacslab up --lab {args.lab}`", file=sys.stderr)
    time.sleep(STABLE_WAIT)
    removed = 0
    for host in (pacs, "vna"):
        for found in im.orthanc(lab, host, "/tools/find", "POST", json.dumps({"Level": "Study", "Query": {"PatientName": PATIENT}})):
            im.orthanc(lab, host, f"/studies/{found}", "DELETE")
            removed += 1
    median = {k: {s: round(statistics.median(v), 2) for s, v in d.items()} for k, d in (("study_mb_s", study_mb_s), ("instances_s", instances_s))}
    record_ = append_result(RESULTS, {
        "runs": args.runs, "rounds": args.rounds, "images": args.images, "fetches": args.fetches,
        "signed_in_ms": {"p50": round(percentile(signed_in, 50)), "p95": round(percentile(signed_in, 95))},
        "displayed_ms": {"p50": round(percentile(displayed, 50)), "p95": round(percentile(displayed, 95))},
        **median,
        "study_filtered_over_unfiltered": round(median["study_mb_s"]["filtered"] / median["study_mb_s"]["unfiltered"], 3),
        "instances_filtered_over_unfiltered": round(median["instances_s"]["filtered"] / median["instances_s"]["unfiltered"], 3),
        "bench_studies_removed": removed,
    })
    print(json.dumps(record_, indent=1))
    return 0


# Runs on the client: one DICOMweb JSON answer (QIDO-RS), with the session's cookies.
FETCH_JSON = r"""
import json, ssl, sys, urllib.request
req = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile="/etc/pacslab/tls/root.pem")
r = urllib.request.Request(req["url"], headers={"Cookie": req["cookie"], "Accept": "application/dicom+json"})
print(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)).open(r, timeout=60).read().decode())
"""


if __name__ == "__main__":
    sys.exit(main())
