"""The control report: control -> CSF v1.1 / SP 800-53 -> test results (docs/architecture.md section 7).

Grouped by CSF function and subcategory. A control is

- passed: it has results, and every one of its tests ran and passed;
- failed: any of its tests failed, or errored (in setup, call or teardown): the proof broke;
- incomplete: some tests passed, but at least one was skipped, or expected and not run
  (deselected, e.g. a lifecycle test left out of a steady verify): the proof is partial;
- partial: the catalogue says only part of it is built (its `missing` names the rest), and every
  test of the part that is ran and passed; never shown as passed;
- not run: implemented (or partial), but no test of it passed in this run (no result, or only skips);
- waived: the lab definition waives it, with its justification (never shown as passed, whatever
  its tests did);
- not implemented: the catalogue says so.

Incomplete and not-run controls name the tests that did not run and why (the skip reason). Every
case of every control is in a collapsible table (test, case id, outcome, what it observed), linked
from the control's row: for C-ACC-04, each denied zone pair and port with its NFLOG line.
Result records are the pytest plugin's (pacslab.pytest_plugin): nodeid, control, outcome (passed,
failed, error, skipped, deselected), seconds, evidence, message. A test whose evidence names a
``screenshot`` (a PNG's path relative to the results file, pytest_plugin's evidence_dir) has the
picture in its control's row of the page, embedded (the page stays one file), with the test and its
outcome under it; report.json keeps the path.
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engine import last_converged
from .export import flow_rows
from .plan import state_dir
from .topology import REPO_ROOT, Lab, safe_load

CONTROLS_FILE = REPO_ROOT / "controls.yml"
RUN_RECORD = "run.json"  # next to results.json: when the verify ran, on which commit
CSF_FUNCTIONS = {"ID": "Identify", "PR": "Protect", "DE": "Detect", "RS": "Respond", "RC": "Recover"}
VERDICTS = ("passed", "partial", "failed", "incomplete", "not run", "waived", "not implemented")
STATUSES = ("implemented", "partial", "not_implemented")  # controls.yml
FAILED_OUTCOMES = ("failed", "error")  # the check ran and broke
OUTCOMES = ("passed", "failed", "error", "skipped", "deselected")


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    csf: tuple[str, ...]
    sp800_53: tuple[str, ...]
    roles: tuple[str, ...]
    status: str
    proves: str
    missing: str = ""  # status partial: what is not built yet


def load_controls(path: Path = CONTROLS_FILE) -> tuple[dict[str, Control], str]:
    data = safe_load(path.read_text())
    controls = {
        cid: Control(
            id=cid,
            title=body["title"],
            csf=tuple(body["csf"]),
            sp800_53=tuple(body["sp800_53"]),
            roles=tuple(body["roles"]),
            status=body["status"],
            proves=body["proves"],
            missing=body.get("missing", ""),
        )
        for cid, body in data["controls"].items()
    }
    return controls, str(data.get("mapping_source", ""))


def verdict(control: Control, results: list[dict[str, Any]], waivers: dict[str, str]) -> str:
    """One of VERDICTS for a control from its tests' records (see the module docstring).

    Any outcome other than passed (skipped, deselected, or one this function does not know) keeps
    the control from being passed: a control is passed only when every test of it ran and passed.
    """
    if control.id in waivers:
        return "waived"
    if control.status not in ("implemented", "partial"):
        return "not implemented"
    if any(r["outcome"] in FAILED_OUTCOMES for r in results):
        return "failed"
    passed = [r for r in results if r["outcome"] == "passed"]
    if not passed:
        return "not run"
    if len(passed) != len(results):
        return "incomplete"
    return "partial" if control.status == "partial" else "passed"


def not_run(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The tests of a control that neither passed nor failed: nodeid, outcome and the reason."""
    return [
        {"test": r["nodeid"], "outcome": r["outcome"], "reason": r.get("message", "")}
        for r in results
        if r["outcome"] != "passed" and r["outcome"] not in FAILED_OUTCOMES
    ]


def _commit() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes; None values without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": dirty}


def record_verify(out: Path, started: datetime, finished: datetime, *, lifecycle: bool, pytest_exit: int) -> None:
    """Write run.json next to the results: {started, finished (ISO 8601, UTC), seconds, commit,
    dirty, lifecycle, pytest_exit}."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"started": started.isoformat(), "finished": finished.isoformat(),
              "seconds": round((finished - started).total_seconds(), 1), **_commit(),
              "lifecycle": lifecycle, "pytest_exit": pytest_exit}
    (out / RUN_RECORD).write_text(json.dumps(record, indent=1))


def run_state(record: dict[str, Any] | None, last_up: datetime | None, has_results: bool) -> dict[str, Any]:
    """The report's header: the verify run (record_verify's record, or None values when none was
    kept), the lab's last successful `up`, and ``stale``: why these results may no longer describe
    the lab ("" when they do): no results, no record of the run, or an `up` after the verify ended."""
    keys = ("started", "finished", "seconds", "commit", "dirty", "lifecycle", "pytest_exit")
    run: dict[str, Any] = dict.fromkeys(keys)
    try:  # a record written by another version, or by hand: what cannot be read counts as no record
        finished = datetime.fromisoformat(record["finished"]) if isinstance(record, dict) else None
    except (KeyError, TypeError, ValueError):
        finished = None
    if finished is None or record is None:
        record = None
    else:
        run.update({k: record.get(k) for k in keys})
    run["last_up"] = last_up.isoformat() if last_up else None
    if not has_results:
        run["stale"] = "no verify results: run `pacslab verify`"
    elif record is None or finished is None:
        run["stale"] = "the results carry no record of their verify run (when, on which commit)"
    elif last_up and last_up > finished:
        run["stale"] = (f"the lab was brought up again at {last_up.isoformat(timespec='seconds')}, after this verify "
                        f"ended ({record['finished'][:19]}): these results describe the lab before that `up`")
    else:
        run["stale"] = ""
    return run


def build(lab: Lab, results: list[dict[str, Any]], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report document; ``run`` is run_state's header (None: no verify recorded)."""
    controls, mapping_source = load_controls()
    waivers = {w.control: w.justification for w in lab.waivers}
    by_control: dict[str, list[dict[str, Any]]] = defaultdict(list)
    platform: list[dict[str, Any]] = []
    for r in results:
        (by_control[r["control"]] if r.get("control") else platform).append(r)

    entries = {}
    for cid, c in controls.items():
        rs = by_control.get(cid, [])
        entries[cid] = {
            "id": cid,
            "title": c.title,
            "csf": list(c.csf),
            "sp800_53": list(c.sp800_53),
            "roles": list(c.roles),
            "proves": c.proves,
            "missing": c.missing,
            "verdict": verdict(c, rs, waivers),
            "justification": waivers.get(cid, ""),
            "tests": _counts(rs),
            "failures": [
                {"test": r["nodeid"], "outcome": r["outcome"], "message": r["message"], "evidence": r["evidence"]}
                for r in rs if r["outcome"] in FAILED_OUTCOMES
            ][:50],
            "not_run": not_run(rs)[:50],
            "cases": [_case(r) for r in rs],
            "screenshots": [{"test": r["nodeid"], "outcome": r["outcome"], "path": r["evidence"]["screenshot"]}
                            for r in rs if isinstance(r.get("evidence"), dict) and isinstance(r["evidence"].get("screenshot"), str)],
        }

    functions: dict[str, dict[str, list[str]]] = {}
    for cid, c in controls.items():
        for sub in c.csf:
            fn = CSF_FUNCTIONS.get(sub[:2], sub[:2])
            functions.setdefault(fn, {}).setdefault(sub, []).append(cid)
    ordered = {
        fn: dict(sorted(functions[fn].items()))
        for fn in CSF_FUNCTIONS.values()
        if fn in functions
    }
    flows = [row for row in flow_rows(lab) if row["enforced_by"] == "fw"]
    summary = {v: sum(e["verdict"] == v for e in entries.values()) for v in VERDICTS}
    return {
        "lab": lab.name,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run if run is not None else run_state(None, None, bool(results)),
        "totals": _counts(results),
        "mapping_source": mapping_source,
        "summary": summary,
        "functions": ordered,
        "controls": entries,
        "flows": flows,
        "platform_tests": _counts(platform),
        "platform_failures": [{"test": r["nodeid"], "message": r["message"]} for r in platform if r["outcome"] in FAILED_OUTCOMES],
    }


def _flat(value: Any, prefix: str = "") -> list[str]:
    """A test's evidence as ``key=value`` pairs, nested keys joined with dots (nflog.timestamp=...)."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _flat(v, f"{prefix}{k}.")]
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return [f"{prefix.rstrip('.')}={text}" if prefix else text]


def _case(result: dict[str, Any]) -> dict[str, str]:
    """One row of a control's case table: the test, its case (the parametrize id: zone pair, port,
    host ...), its outcome, and what it observed (its evidence, flattened, at most 600 characters;
    the message of a failure)."""
    test, _, case = result["nodeid"].split("::", 1)[-1].partition("[")
    observed = "; ".join(_flat(result["evidence"])) if result["evidence"] else ""
    if result["outcome"] not in ("passed",) and result["message"]:
        observed = f"{result['message']}; {observed}" if observed else result["message"]
    return {"test": test, "case": case.removesuffix("]"), "outcome": result["outcome"], "observed": observed[:600]}


def _counts(results: list[dict[str, Any]]) -> dict[str, int]:
    """Tests per outcome; an outcome outside OUTCOMES is counted under its own name."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in counts.items() if n or o in ("passed", "failed"))


def _e(text: Any) -> str:
    return html.escape(str(text))


def _header(data: dict[str, Any]) -> str:
    """When the verify ran, on which commit, its totals, and a warning when the results are stale."""
    run = data["run"]
    commit = (run["commit"] or "unknown")[:12] + (" (with uncommitted changes)" if run["dirty"] else "")
    rows = [
        ("generated", data["generated"]),
        ("verify", f"{run['started'] or '?'} to {run['finished'] or '?'} ({run['seconds'] or '?'} s)"
                   + (", with the lifecycle checks" if run["lifecycle"] else ", steady checks only" if run["lifecycle"] is False else "")),
        ("commit", commit),
        ("tests", _tally(data["totals"])),
        ("last successful up", run["last_up"] or "none recorded"),
    ]
    table = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
    warning = f"<p class='stale'><strong>Stale:</strong> {_e(run['stale'])}</p>" if run["stale"] else ""
    return table + warning


def _screenshots(shots: list[dict[str, str]], base: Path | None) -> str:
    """A control's screenshots as embedded PNGs (read from ``base``), each captioned with its test and
    outcome; one that cannot be read is named as missing."""
    out = []
    for shot in shots:
        caption = f"<figcaption><small>{_e(shot['test'])} ({_e(shot['outcome'])})</small></figcaption>"
        try:
            png = (base / shot["path"]).read_bytes() if base is not None else b""
        except OSError:
            png = b""
        if png.startswith(b"\x89PNG"):
            image = f"<img alt='screenshot' style='max-width:100%' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        else:
            image = f"<em>screenshot {_e(shot['path'])} missing</em>"
        out.append(f"<details><summary>screenshot</summary><figure>{image}{caption}</figure></details>")
    return "".join(out)


def render_html(data: dict[str, Any], base: Path | None = None) -> str:
    """The page; ``base``: the folder the screenshots' paths are relative to (the results file's)."""
    colour = {"passed": "#1b7f3b", "partial": "#b35c00", "failed": "#b3261e", "incomplete": "#b35c00", "waived": "#8a6d00",
              "not implemented": "#666", "not run": "#666"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pacslab report: {_e(data['lab'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.v{font-weight:bold;color:#fff;padding:0 .4em;border-radius:.2em}"
        "pre{white-space:pre-wrap;font-size:.85em;margin:0}.stale{background:#fdecea;padding:.5em}</style></head><body>",
        f"<h1>pacslab control report: lab {_e(data['lab'])}</h1>",
        _header(data),
        "<p>" + ", ".join(f"{_e(v)}: {n}" for v, n in data["summary"].items()) + "</p>",
        f"<p><small>Mapping: {_e(data['mapping_source'])}</small></p>",
    ]
    for fn, subs in data["functions"].items():
        parts.append(f"<h2>{_e(fn)}</h2><table><tr><th>CSF</th><th>control</th><th>verdict</th><th>tests</th><th>what the check proves</th></tr>")
        for sub, cids in subs.items():
            for cid in cids:
                c = data["controls"][cid]
                v = c["verdict"]
                extra = f"<br><em>waived: {_e(c['justification'])}</em>" if c["justification"] else ""
                extra += f"<br><em>not built yet: {_e(c['missing'])}</em>" if c["missing"] else ""
                fails = "".join(f"<pre>{_e(f['test'])} ({_e(f['outcome'])}): {_e(f['message'])}</pre>" for f in c["failures"][:5])
                fails += "".join(
                    f"<pre>{_e(n['test'])} ({_e(n['outcome'])}){': ' + _e(n['reason']) if n['reason'] else ''}</pre>" for n in c["not_run"][:10]
                )
                cases = f"<br><a href='#cases-{_e(cid)}'>every case</a>" if c["cases"] else ""
                parts.append(
                    f"<tr><td>{_e(sub)}</td><td>{_e(cid)} {_e(c['title'])}<br><small>SP 800-53: {_e(', '.join(c['sp800_53']))}</small></td>"
                    f"<td><span class='v' style='background:{colour[v]}'>{_e(v)}</span>{extra}</td>"
                    f"<td>{_e(_tally(c['tests']))}{cases}</td><td>{_e(c['proves'])}{fails}{_screenshots(c['screenshots'], base)}</td></tr>"
                )
        parts.append("</table>")
    parts.append(
        "<h2>Flow matrix (the only traffic the fw forwards)</h2><table>"
        "<tr><th>id</th><th>from</th><th>to</th><th>proto/ports</th><th>purpose</th><th>CSF</th></tr>"
    )
    for f in data["flows"]:
        ports = f["ports"]
        parts.append(
            f"<tr><td>{_e(f['id'])}</td><td>{_e(', '.join(f['from']))}</td><td>{_e(f['to'])}</td>"
            f"<td>{_e(f['proto'])}/{_e(ports)}</td><td>{_e(f['purpose'])}</td><td>{_e(', '.join(f['csf']))}</td></tr>"
        )
    parts.append("</table><h2>Evidence: every case of every control</h2>"
                 "<p>One row per test case: the case (zone pair, port, host ...), its outcome and what the "
                 "check observed (probe outcome, NFLOG line, refusal ...). Open a control to see its cases.</p>")
    for cid, c in data["controls"].items():
        if not c["cases"]:
            continue
        rows = "".join(
            f"<tr><td>{_e(k['test'])}</td><td>{_e(k['case'])}</td><td>{_e(k['outcome'])}</td><td><small>{_e(k['observed'])}</small></td></tr>"
            for k in c["cases"]
        )
        parts.append(
            f"<details id='cases-{_e(cid)}'><summary>{_e(cid)} {_e(c['title'])}: {len(c['cases'])} cases "
            f"({_e(_tally(c['tests']))})</summary><table><tr><th>test</th><th>case</th><th>outcome</th><th>observed</th></tr>"
            f"{rows}</table></details>"
        )
    pt = data["platform_tests"]
    parts.append(f"<h2>Platform tests (no control)</h2><p>{_e(_tally(pt))}</p>")
    parts += [f"<pre>{_e(f['test'])}: {_e(f['message'])}</pre>" for f in data["platform_failures"]]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(lab: Lab, results_file: Path, out: Path) -> tuple[Path, Path]:
    """report.json and report.html in ``out`` from the results file and the run record beside it."""
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    try:
        record = json.loads((results_file.parent / RUN_RECORD).read_text())
    except (OSError, ValueError):
        record = None
    data = build(lab, results, run_state(record, last_converged(state_dir(lab)), results_file.is_file()))
    out.mkdir(parents=True, exist_ok=True)
    js, page = out / "report.json", out / "report.html"
    js.write_text(json.dumps(data, indent=1, default=str))
    page.write_text(render_html(data, results_file.parent))
    return page, js
