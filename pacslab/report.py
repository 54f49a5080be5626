"""The control report: control -> CSF v1.1 / SP 800-53 -> test results (ARCHITECTURE section 7).

Grouped by CSF function and subcategory. A control is passed (every test passed), failed (any
test failed), waived (the lab definition waives it, with its justification; never shown as passed),
not implemented (the catalogue says so), or not run (implemented, but no result in this run).
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .topology import REPO_ROOT, Lab

CONTROLS_FILE = REPO_ROOT / "controls.yml"
CSF_FUNCTIONS = {"ID": "Identify", "PR": "Protect", "DE": "Detect", "RS": "Respond", "RC": "Recover"}
VERDICTS = ("passed", "failed", "waived", "not implemented", "not run")


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    csf: tuple[str, ...]
    sp800_53: tuple[str, ...]
    roles: tuple[str, ...]
    status: str
    proves: str


def load_controls(path: Path = CONTROLS_FILE) -> tuple[dict[str, Control], str]:
    data = yaml.safe_load(path.read_text())
    controls = {
        cid: Control(
            id=cid,
            title=body["title"],
            csf=tuple(body["csf"]),
            sp800_53=tuple(body["sp800_53"]),
            roles=tuple(body["roles"]),
            status=body["status"],
            proves=body["proves"],
        )
        for cid, body in data["controls"].items()
    }
    return controls, str(data.get("mapping_source", ""))


def verdict(control: Control, results: list[dict[str, Any]], waivers: dict[str, str]) -> str:
    if control.id in waivers:
        return "waived"
    if control.status != "implemented":
        return "not implemented"
    if not results:
        return "not run"
    if any(r["outcome"] == "failed" for r in results):
        return "failed"
    return "passed" if any(r["outcome"] == "passed" for r in results) else "not run"


def build(lab: Lab, results: list[dict[str, Any]]) -> dict[str, Any]:
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
            "verdict": verdict(c, rs, waivers),
            "justification": waivers.get(cid, ""),
            "tests": {o: sum(r["outcome"] == o for r in rs) for o in ("passed", "failed", "skipped")},
            "failures": [{"test": r["nodeid"], "message": r["message"], "evidence": r["evidence"]} for r in rs if r["outcome"] == "failed"][:50],
            "evidence": [{"test": r["nodeid"], "evidence": r["evidence"]} for r in rs if r["evidence"]][:20],
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
    flows = [
        {
            "id": f.id,
            "from": [str(s) for s in f.sources],
            "to": str(f.dest),
            "proto": f.proto,
            "ports": list(f.ports) if f.ports is not None else "any",
            "purpose": f.purpose,
            "csf": list(f.csf),
        }
        for f in lab.flows
    ]
    summary = {v: sum(e["verdict"] == v for e in entries.values()) for v in VERDICTS}
    return {
        "lab": lab.name,
        "mapping_source": mapping_source,
        "summary": summary,
        "functions": ordered,
        "controls": entries,
        "flows": flows,
        "platform_tests": {o: sum(r["outcome"] == o for r in platform) for o in ("passed", "failed", "skipped")},
        "platform_failures": [{"test": r["nodeid"], "message": r["message"]} for r in platform if r["outcome"] == "failed"],
    }


def _e(text: Any) -> str:
    return html.escape(str(text))


def render_html(data: dict[str, Any]) -> str:
    colour = {"passed": "#1b7f3b", "failed": "#b3261e", "waived": "#8a6d00", "not implemented": "#666", "not run": "#666"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pacslab report: {_e(data['lab'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.v{font-weight:bold;color:#fff;padding:0 .4em;border-radius:.2em}"
        "pre{white-space:pre-wrap;font-size:.85em;margin:0}</style></head><body>",
        f"<h1>pacslab control report: lab {_e(data['lab'])}</h1>",
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
                fails = "".join(f"<pre>{_e(f['test'])}: {_e(f['message'])}</pre>" for f in c["failures"][:5])
                parts.append(
                    f"<tr><td>{_e(sub)}</td><td>{_e(cid)} {_e(c['title'])}<br><small>SP 800-53: {_e(', '.join(c['sp800_53']))}</small></td>"
                    f"<td><span class='v' style='background:{colour[v]}'>{_e(v)}</span>{extra}</td>"
                    f"<td>{c['tests']['passed']} passed, {c['tests']['failed']} failed</td><td>{_e(c['proves'])}{fails}</td></tr>"
                )
        parts.append("</table>")
    parts.append(
        "<h2>Flow matrix (the only traffic the fw forwards)</h2><table>"
        "<tr><th>id</th><th>from</th><th>to</th><th>proto/ports</th><th>purpose</th><th>CSF</th></tr>"
    )
    for f in data["flows"]:
        ports = f["ports"] if f["ports"] == "any" else ",".join(map(str, f["ports"]))
        parts.append(
            f"<tr><td>{_e(f['id'])}</td><td>{_e(', '.join(f['from']))}</td><td>{_e(f['to'])}</td>"
            f"<td>{_e(f['proto'])}/{_e(ports)}</td><td>{_e(f['purpose'])}</td><td>{_e(', '.join(f['csf']))}</td></tr>"
        )
    parts.append("</table><h2>Evidence</h2>")
    for cid, c in data["controls"].items():
        for ev in c["evidence"]:
            parts.append(f"<h3>{_e(cid)}: {_e(ev['test'])}</h3><pre>{_e(json.dumps(ev['evidence'], indent=1)[:4000])}</pre>")
    pt = data["platform_tests"]
    parts.append(f"<h2>Platform tests (no control)</h2><p>{pt['passed']} passed, {pt['failed']} failed</p>")
    parts += [f"<pre>{_e(f['test'])}: {_e(f['message'])}</pre>" for f in data["platform_failures"]]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(lab: Lab, results_file: Path, out: Path) -> tuple[Path, Path]:
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    data = build(lab, results)
    out.mkdir(parents=True, exist_ok=True)
    js, page = out / "report.json", out / "report.html"
    js.write_text(json.dumps(data, indent=1, default=str))
    page.write_text(render_html(data))
    return page, js
