"""Workshop scenarios (docs/architecture.md, the exercise layer): ``scenarios/<id>/scenario.yml``.

A scenario file follows ``scenarios/scenario.schema.json`` (JSON Schema 2020-12, format version
``schema_version: 1``) and is then checked against what the schema cannot see: the control
catalogue (controls.yml), the lab definition (the attacker and every step's host are deployed
hosts of this lab), the step scripts beside the file, and the integration checks that grade each
control (each names a test under tests/integration that carries that control's marker). A broken
file is refused with file, key and reason, like a lab definition, before anything runs.

A step is a Python script beside scenario.yml (or ``lib/<name>.py``, shared: scenarios/lib), run by ``python3`` inside a lab container (``docker
exec``, the script and its CONTEXT on stdin, never in argv). CONTEXT holds the lab's hosts
(address, zone, AE title, services), the step's ``args``, the passwords of the people it names in
``passwords`` (a leaked password in the story, or one a reset needs; the results are redacted),
the TOTP codes of the people it names in ``codes`` (an insider who signs in with both factors)
and the length of a TOTP step (``totp_step``, seconds),
the run's start (``since``, epoch seconds) and, for a step after the first and for reset actions,
the results of the steps run so far (``run``: step id -> result). The script prints one JSON
object as its last line: the step's result, compared with the outcome the scenario expects in the
mode it runs in (keys dotted for nested values, values written out).

``check`` grades the lab with the scenario's integration checks (pytest, the same tests ``pacslab
verify`` runs); ``reset`` runs the scenario's reset actions, deletes the studies the run added to
each Orthanc and the worklist files it added, empties the fw's rate-limit sets, and proves the lab
is back by its state fingerprint (pacslab.fingerprint) taken before the first run.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import people
from .docker import docker
from .plan import state_dir
from .probes import oidc
from .redact import redact, redact_tree, secret_values
from .topology import REPO_ROOT, Lab, Problem, read_vars_file, safe_load, vars_file_for, write_vars_file

SCENARIOS_DIR = REPO_ROOT / "scenarios"
SCHEMA_FILE = SCENARIOS_DIR / "scenario.schema.json"
LIB_DIR = SCENARIOS_DIR / "lib"  # step scripts several scenarios share (script: lib/<name>.py)
CONTROLS_FILE = REPO_ROOT / "controls.yml"
# The six threat categories NCCoE published for SP 1800-24 [V] (reference catalogue section 6.1).
CATEGORIES = {
    "targeted-attack": "Targeted attacks",
    "service-disruption": "Service disruption",
    "lack-of-access-control": "Lack of access control",
    "unprotected-data-in-transit": "Unprotected data in transit",
    "vulnerability": "Vulnerability (weak link)",
    "malware": "Malware",
}
MODES = ("defended", "vulnerable")
STEP_TIMEOUT = 300.0  # seconds one step may run

# Runs a step inside a container: the script and its CONTEXT arrive as one JSON document on stdin.
BOOT = (
    "import json, sys\n"
    "envelope = json.load(sys.stdin)\n"
    "exec(compile(envelope['source'], envelope['name'], 'exec'), {'__name__': '__main__', 'CONTEXT': envelope['context']})\n"
)


class ScenarioError(Exception):
    """A scenario file is refused; nothing ran. ``problems``: file, key and reason of each fault;
    ``planned``: when the only faults are that the lab plans hosts the scenario runs from (no
    container) and lacks the people it names, those hosts (the file is sound; another lab may run it)."""

    def __init__(self, problems: list[Problem], planned: tuple[str, ...] = ()):
        self.problems = problems
        self.planned = planned
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Expectation:
    result: dict[str, Any]  # dotted key -> value the step's JSON must hold
    evidence: str  # what the defence did (or failed to do), in words


@dataclass(frozen=True)
class Action:
    """A script run from a lab host: a step of the attack, or a reset action."""

    id: str
    title: str
    host: str
    script: Path
    args: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Expectation] = field(default_factory=dict)  # mode -> outcome (steps only)
    passwords: tuple[str, ...] = ()  # people whose passwords it gets in CONTEXT['passwords']
    codes: tuple[str, ...] = ()  # people whose TOTP codes it gets in CONTEXT['codes']


@dataclass(frozen=True)
class Vulnerable:
    """The break-and-fix overlay: controls waived, host variables set, flows added; what to repair."""

    waives: tuple[str, ...]
    host_vars: dict[str, dict[str, Any]]
    flows: tuple[dict[str, Any], ...]
    repair: str


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    category: tuple[str, ...]
    controls: dict[str, tuple[str, ...]]  # control id -> pytest node ids that grade it
    attacker: str
    story: str
    learning_goals: tuple[str, ...]
    hints: tuple[str, ...]
    steps: tuple[Action, ...]
    reset: tuple[Action, ...]
    folder: Path
    vulnerable: Vulnerable | None = None

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes it runs in: defended, and vulnerable where it has an overlay (then every step
        has a vulnerable outcome: load_scenario checks it)."""
        return ("defended", "vulnerable") if self.vulnerable else ("defended",)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "category": list(self.category), "controls": sorted(self.controls),
                "attacker": self.attacker, "steps": len(self.steps), "modes": list(self.modes)}

    def document(self) -> dict[str, Any]:
        """Everything the file says, as plain data (``scenario show --json``)."""
        def action(a: Action) -> dict[str, Any]:
            body: dict[str, Any] = {"id": a.id, "title": a.title, "from": a.host, "script": a.script.name, "args": a.args}
            if a.passwords:
                body["passwords"] = list(a.passwords)  # whose, never the values
            if a.codes:
                body["codes"] = list(a.codes)
            if a.expect:
                body["expect"] = {m: {"result": e.result, "evidence": e.evidence} for m, e in a.expect.items()}
            return body

        doc = {**self.summary(), "controls": {c: list(t) for c, t in self.controls.items()}, "story": self.story,
               "learning_goals": list(self.learning_goals), "hints": list(self.hints),
               "steps": [action(s) for s in self.steps], "reset": [action(a) for a in self.reset]}
        if self.vulnerable:
            doc["vulnerable"] = {"waives": list(self.vulnerable.waives), "host_vars": self.vulnerable.host_vars,
                                 "flows": list(self.vulnerable.flows), "repair": self.vulnerable.repair}
        return doc


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _key(path: Any) -> str:
    """A JSON Schema error path as a key: steps[2].expect.defended."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def catalogue(path: Path = CONTROLS_FILE) -> set[str]:
    return set((safe_load(path.read_text()) or {}).get("controls", {}))


def _test_controls(test_file: Path) -> tuple[set[str], dict[str, set[str]]]:
    """The control markers of a test module: the module's own (pytestmark) and each test
    function's, read from its source (ast): no import, no fixture runs."""
    def marks(node: ast.AST) -> set[str]:
        found = set()
        for call in ast.walk(node):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "control"
                    and call.args and isinstance(call.args[0], ast.Constant)):
                found.add(str(call.args[0].value))
        return found

    tree = ast.parse(test_file.read_text())
    module: set[str] = set()
    functions: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            module |= marks(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            functions[node.name] = set().union(*(marks(d) for d in node.decorator_list))
    return module, functions


def load_scenario(folder: Path, lab: Lab, controls: set[str] | None = None) -> Scenario:
    """The scenario in ``folder``/scenario.yml, checked against the schema, the control catalogue,
    ``lab`` and the repository. Raises ScenarioError with every problem found."""
    file = folder / "scenario.yml"
    fname = _rel(file)
    if not file.is_file():
        raise ScenarioError([Problem(_rel(folder), "(folder)", "no scenario.yml")])
    try:
        data = safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError([Problem(fname, f"line {mark.line + 1}" if mark else "(document)", f"not YAML: {exc}")]) from exc
    schema = json.loads(SCHEMA_FILE.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise ScenarioError([Problem(fname, _key(e.absolute_path), e.message) for e in errors])

    problems: list[Problem] = []
    known = catalogue() if controls is None else controls
    if data["id"] != folder.name:
        problems.append(Problem(fname, "id", f"{data['id']!r} is not the folder's name {folder.name!r}"))

    planned: list[Problem] = []  # the problems that are a planned host
    planned_hosts: set[str] = set()  # those hosts
    absent: list[Problem] = []  # the problems that are a person the lab does not define

    def host(value: str, key: str) -> None:
        if value not in lab.hosts:
            problems.append(Problem(fname, key, f"{value!r}: lab {lab.name!r} has no such host"))
        elif not lab.hosts[value].deployed:
            problems.append(Problem(fname, key, f"{value!r} is planned in lab {lab.name!r}: no container to run from"))
            planned.append(problems[-1])
            planned_hosts.add(value)

    host(data["attacker"], "attacker")
    for cid, node_ids in data["controls"].items():
        if cid not in known:
            problems.append(Problem(fname, f"controls.{cid}", "not a control of the catalogue (controls.yml)"))
            continue
        for i, node_id in enumerate(node_ids):
            path, _, name = node_id.partition("::")
            test_file = REPO_ROOT / path
            function = name.split("[", 1)[0]
            if not test_file.is_file():
                problems.append(Problem(fname, f"controls.{cid}[{i}]", f"{path}: no such test file"))
                continue
            module, functions = _test_controls(test_file)
            if function not in functions:
                problems.append(Problem(fname, f"controls.{cid}[{i}]", f"{path} has no test {function}"))
            elif cid not in module | functions[function]:
                problems.append(Problem(fname, f"controls.{cid}[{i}]", f"{function} does not carry @pytest.mark.control({cid!r})"))

    def action(body: dict[str, Any], key: str) -> Action:
        where = body.get("from", data["attacker"])
        if "from" in body:
            host(where, f"{key}.from")
        script = (LIB_DIR / body["script"].removeprefix("lib/")) if body["script"].startswith("lib/") else folder / body["script"]
        if not script.is_file():
            problems.append(Problem(fname, f"{key}.script", f"{body['script']}: no such file "
                                    + ("in scenarios/lib" if body["script"].startswith("lib/") else "beside scenario.yml")))
        expect = {m: Expectation(dict(o["result"]), o["evidence"].strip()) for m, o in body.get("expect", {}).items()}
        people = {p.name for p in lab.people}
        for field_name in ("passwords", "codes"):
            for i, name in enumerate(body.get(field_name, [])):
                if name not in people:
                    problems.append(Problem(fname, f"{key}.{field_name}[{i}]", f"{name!r}: lab {lab.name!r} has no such person (lab_people)"))
                    absent.append(problems[-1])
        if body.get("codes"):  # codes the lab's IdP accepts: a lab that plans it leaves the scenario out, as for a step's host
            idp = identity_provider(lab) if any("idp_servers" in h.groups for h in lab.hosts.values()) else None
            if idp is None:
                problems.append(Problem(fname, f"{key}.codes", f"lab {lab.name!r} has no identity provider (group idp_servers)"))
            elif not lab.hosts[idp].deployed:
                problems.append(Problem(fname, f"{key}.codes", f"{idp!r} is planned in lab {lab.name!r}: no IdP to accept the codes"))
                planned.append(problems[-1])
                planned_hosts.add(idp)
        return Action(body["id"], body["title"], where, script, dict(body.get("args") or {}), expect, tuple(body.get("passwords", [])),
                      tuple(body.get("codes", [])))

    steps = tuple(action(s, f"steps[{i}]") for i, s in enumerate(data["steps"]))
    vulnerable = None
    if "vulnerable" in data:
        v = data["vulnerable"]
        for i, cid in enumerate(v["waives"]):
            if cid not in data["controls"]:
                problems.append(Problem(fname, f"vulnerable.waives[{i}]", f"{cid} is not one of the scenario's controls"))
        for hname in v.get("host_vars", {}):
            host(hname, f"vulnerable.host_vars.{hname}")
        vulnerable = Vulnerable(tuple(v["waives"]), {h: dict(x) for h, x in v.get("host_vars", {}).items()},
                                tuple(v.get("flows", [])), v["repair"].strip())
    for i, step in enumerate(steps):
        if (vulnerable is None) == ("vulnerable" in step.expect):
            problems.append(Problem(fname, f"steps[{i}].expect", "no vulnerable outcome: with a vulnerable overlay every step needs one"
                                    if vulnerable else "a vulnerable outcome, but the scenario has no vulnerable overlay"))
    resets = tuple(action(a, f"reset[{i}]") for i, a in enumerate(data["reset"]))
    seen: set[str] = set()
    for key, a in [(f"steps[{i}]", s) for i, s in enumerate(steps)] + [(f"reset[{i}]", r) for i, r in enumerate(resets)]:
        if a.id in seen:
            problems.append(Problem(fname, f"{key}.id", f"{a.id!r} is used twice: step and reset ids are one namespace"))
        seen.add(a.id)
    if problems:
        # a lab without the hosts (and so without the people) the scenario needs: the file is sound
        lacking = bool(planned) and all(p in planned or p in absent for p in problems)
        raise ScenarioError(problems, tuple(sorted(planned_hosts)) if lacking else ())
    return Scenario(
        id=data["id"], title=data["title"], category=tuple(data["category"]),
        controls={c: tuple(n) for c, n in data["controls"].items()}, attacker=data["attacker"], story=data["story"].strip(),
        learning_goals=tuple(data["learning_goals"]), hints=tuple(data["hints"]), steps=steps, reset=resets, folder=folder,
        vulnerable=vulnerable,
    )


def load_all(lab: Lab, root: Path = SCENARIOS_DIR, left_out: dict[str, tuple[str, ...]] | None = None) -> list[Scenario]:
    """Every scenario under ``root`` (a folder with a scenario.yml) that runs in ``lab``, sorted by
    number. One that runs from hosts this lab plans but does not deploy (W6 in a lab without the
    identity hosts) is left out, and named in ``left_out`` (id -> those hosts) when given. Raises
    ScenarioError with the problems of every refused file."""
    scenarios, problems = [], []
    known = catalogue()
    for folder in sorted(p.parent for p in root.glob("*/scenario.yml")):
        try:
            scenarios.append(load_scenario(folder, lab, known))
        except ScenarioError as exc:
            if exc.planned:
                if left_out is not None:
                    left_out[folder.name] = exc.planned
                continue
            problems += exc.problems
    if problems:
        raise ScenarioError(problems)
    return sorted(scenarios, key=lambda s: int(s.id[1:]))


def find(lab: Lab, scenario_id: str, root: Path = SCENARIOS_DIR) -> Scenario:
    """One scenario by id. KeyError naming the ids there are when it does not exist."""
    folder = root / scenario_id
    if not (folder / "scenario.yml").is_file():
        there = ", ".join(sorted(p.parent.name for p in root.glob("*/scenario.yml"))) or "none"
        raise KeyError(f"no scenario {scenario_id!r} (there are: {there})")
    return load_scenario(folder, lab)


# ---------------------------------------------------------------------------------------------
# Running


def mismatches(result: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Each expected key (dotted for nested values) whose value the result does not hold, as
    'key: expected X, seen Y'. Empty when the result holds every expected value."""
    out = []
    for key, want in expected.items():
        seen: Any = result
        for part in key.split("."):
            seen = seen.get(part, KeyError) if isinstance(seen, dict) else KeyError
        if seen is KeyError:
            out.append(f"{key}: expected {want!r}, absent")
        elif seen != want or type(seen) is not type(want):  # false is not 0 and 1 is not true
            out.append(f"{key}: expected {want!r}, seen {seen!r}")
    return out


def lab_context(lab: Lab) -> dict[str, Any]:
    """What a step may know of the lab: per host its address, zone, AE title and services."""
    return {
        "lab": lab.name,
        "hosts": {
            h.name: {"address": str(h.address) if h.address else None, "zone": h.zone, "ae_title": h.ae_title,
                     "deployed": h.deployed, "services": {s.name: s.port for s in h.services}, "groups": list(h.groups)}
            for h in lab.hosts.values()
        },
    }


def identity_provider(lab: Lab) -> str:
    """The lab's IdP (the first host of group idp_servers, deployed or planned). StopIteration when
    the lab has none."""
    return next(h.name for h in sorted(lab.hosts.values(), key=lambda h: h.name) if "idp_servers" in h.groups)


def run_action(lab: Lab, scenario: Scenario, action: Action, context: dict[str, Any]) -> dict[str, Any]:
    """Run one action's script in its host's container; its JSON result. A script that fails or
    prints no JSON gives {"error": ...} with the tail of its output (lab secrets redacted)."""
    passwords, codes = {}, {}
    for name in action.passwords:  # the people's own passwords, as up generated them (pacslab.people)
        try:
            passwords[name] = people.password(state_dir(lab) / "secrets", name)
        except (OSError, IndexError):
            return {"error": f"no password of {name!r} in the lab's secrets: run `pacslab up` first"}
    for name in action.codes:  # the codes of the steps to come that the IdP has not accepted yet (pacslab.probes.oidc)
        try:
            seed = people.totp_seed(state_dir(lab) / "secrets", name)
            codes[name] = people.totp_codes(seed, oidc.last_step(lab, identity_provider(lab), name))
        except (OSError, IndexError, ValueError):  # no seed file, an empty one, one that is no base32 seed
            return {"error": f"no TOTP seed of {name!r} in the lab's secrets: run `pacslab up` first"}
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"error": f"could not read which codes of {name!r} the IdP has taken: {redact(str(exc))[-300:]}"}
    envelope = {"name": f"{scenario.id}/{action.script.name}", "source": action.script.read_text(),
                "context": {**context, "args": action.args, "passwords": passwords, "codes": codes, "totp_step": people.TOTP_STEP,
                            "scenario": scenario.id, "step": action.id}}
    try:  # coreutils' timeout inside the container ends the script there too (the client's timeout alone would not)
        proc = docker("exec", "-i", lab.container_name(action.host), "timeout", "-k", "5", str(int(STEP_TIMEOUT)), "python3", "-c", BOOT,
                      input=json.dumps(envelope), check=False, timeout=STEP_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {STEP_TIMEOUT:.0f} s"}
    if proc.returncode == 124:
        return {"error": f"no result within {STEP_TIMEOUT:.0f} s (the script was stopped)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if proc.returncode != 0 or not isinstance(result, dict):
        return {"error": f"exit {proc.returncode}: {redact((proc.stderr or proc.stdout).strip())[-600:]}"}
    cleaned: dict[str, Any] = redact_tree(result, secret_values())  # a result is saved (run.json) and printed: no lab secret in it
    return cleaned


@dataclass(frozen=True)
class StepOutcome:
    id: str
    title: str
    host: str
    seconds: float
    result: dict[str, Any]
    expected: dict[str, Any]
    evidence: str
    problems: tuple[str, ...]  # mismatches with the expected outcome: empty when as expected

    @property
    def as_expected(self) -> bool:
        return not self.problems

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "from": self.host, "seconds": self.seconds, "as_expected": self.as_expected,
                "expected": self.expected, "evidence": self.evidence, "problems": list(self.problems), "result": self.result}


def run_steps(lab: Lab, scenario: Scenario, mode: str, progress: Any = None) -> list[StepOutcome]:
    """Every step in order, from its host; each result against the mode's expectation.
    ``progress(outcome)`` is called after each step. ValueError when the scenario has no
    expectation for ``mode``."""
    if mode not in scenario.modes:
        raise ValueError(f"{scenario.id} has no expected outcome for mode {mode!r} (it has: {', '.join(scenario.modes) or 'none'})")
    context = {**lab_context(lab), "mode": mode, "since": time.time()}
    outcomes = []
    for step in scenario.steps:
        started = time.monotonic()
        result = run_action(lab, scenario, step, context)
        want = step.expect[mode]
        outcome = StepOutcome(step.id, step.title, step.host, round(time.monotonic() - started, 1), result, want.result, want.evidence,
                              tuple(mismatches(result, want.result)))
        outcomes.append(outcome)
        context.setdefault("run", {})[step.id] = result
        if progress:
            progress(outcome)
    return outcomes


# ---------------------------------------------------------------------------------------------
# State of a run, reset, check

def run_dir_root(lab: Lab) -> Path:
    from .plan import state_dir

    return state_dir(lab) / "scenarios"


def run_dir(lab: Lab, scenario: Scenario) -> Path:
    """.pacslab/<lab>/scenarios/<id>: baseline.json (the fingerprint before the first run since the
    last reset) and run.json (the last run's mode and step results)."""
    return run_dir_root(lab) / scenario.id


def run_scenario(lab: Lab, scenario: Scenario, mode: str, progress: Any = None) -> dict[str, Any]:
    """Take the baseline fingerprint (unless a run since the last reset already took it), run the
    steps, and keep their results for reset (run.json, written after each step: an interrupted run
    can be reset too). The run record: {scenario, mode, started, steps, as_expected}. A vulnerable
    run expects the lab to run the overlay already (derive_overlay, then `up` with it: pacslab.cli
    does both). ScenarioError when another scenario's run has not been reset: a reset puts back what
    was added since its own baseline, so two open runs would undo each other's."""
    folder = run_dir(lab, scenario)
    refuse_other_open_runs(lab, scenario)
    ensure_baseline(lab, scenario)
    record: dict[str, Any] = {"scenario": scenario.id, "mode": mode, "started": time.time(), "as_expected": True, "steps": [],
                              "reset_actions_done": False}

    def keep(outcome: StepOutcome) -> None:
        record["steps"].append(outcome.record())
        record["as_expected"] = all(s["as_expected"] for s in record["steps"])
        (folder / "run.json").write_text(json.dumps(record, indent=1))
        if progress:
            progress(outcome)

    run_steps(lab, scenario, mode, keep)
    return record


def _undo_additions(lab: Lab, baseline: dict[str, Any], kept: Path | None = None) -> list[str]:
    """Delete what was added since ``baseline``: instances on each Orthanc, worklist files on each
    RIS, files in each DICOM node's state folder (images a workstation received); put back, from
    the copies ensure_baseline kept in ``kept``, each file of a DICOM node's state folder that
    changed or went missing; release the hosts quarantined since (a detection's containment);
    empty the fw's rate-limit sets. What it did, in words."""
    from . import fingerprint, response
    from .firewall import RUNTIME_SETS, TABLE
    from .probes import imaging as im

    done = []
    for host in fingerprint.orthanc_hosts(lab):
        before = set(baseline.get(f"orthanc:{host}", {}).get("instances", []))
        new = set(im.orthanc(lab, host, "/instances")) - before
        if not new:
            continue
        # The largest whole that is only added instances goes in one delete: a study (one DICOM
        # Study Deleted in the audit trail), else a series of a study of the baseline (one Instances
        # Accessed, D), else an instance alone (one D each; at night each is an off-hours deletion).
        series = im.orthanc(lab, host, "/series?expand")
        by_study: dict[str, set[str]] = {}
        for one in series:
            by_study.setdefault(one["ParentStudy"], set()).update(one["Instances"])
        whole = sorted(study for study, instances in by_study.items() if instances and instances <= new)
        whole_series = sorted((one["ID"], frozenset(one["Instances"])) for one in series
                              if one["ParentStudy"] not in whole and one["Instances"] and set(one["Instances"]) <= new)
        for study in whole:
            im.orthanc(lab, host, f"/studies/{study}", "DELETE")
        for one_series, _ in whole_series:
            im.orthanc(lab, host, f"/series/{one_series}", "DELETE")
        gone = set().union(*(by_study[study] for study in whole), *(instances for _, instances in whole_series))
        alone = sorted(new - gone)
        for instance in alone:
            im.orthanc(lab, host, f"/instances/{instance}", "DELETE")
        done.append(f"{host}: {len(new)} instance(s) deleted ({len(whole)} whole stud{'y' if len(whole) == 1 else 'ies'}, "
                    f"{len(whole_series)} whole series)")
    now = fingerprint.take(lab)
    folders = {f"worklists:{h}": (h, fingerprint.role_var(lab, h, "ris", "ris_worklists_dir")) for h in fingerprint.ris_hosts(lab)}
    folders |= {f"dicom_node:{h}": (h, fingerprint.DICOM_NODE_STATE) for h in fingerprint.dicom_node_hosts(lab)}
    for section, (host, folder) in folders.items():
        added = fingerprint.added_files(baseline, now, section)
        if added:
            docker("exec", "-w", folder, lab.container_name(host), "rm", "-f", "--", *added)
            done.append(f"{host}: {len(added)} file(s) removed from {folder}")
    for host in fingerprint.dicom_node_hosts(lab):
        want, have = baseline.get(f"dicom_node:{host}", {}), now.get(f"dicom_node:{host}", {})
        copy = kept / f"state-{host}.tar" if kept else None
        if not copy or not copy.is_file():
            continue
        with tarfile.open(copy) as tar:  # the copy and the fingerprint were taken one after the other: only what the copy holds
            held = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
        lost = sorted(p for p, digest in want.items() if have.get(p) != digest and p in held)
        if not lost:
            continue
        proc = subprocess.run(["docker", "exec", "-i", lab.container_name(host), "tar", "-C", fingerprint.DICOM_NODE_STATE, "-xpf", "-", "--",
                               *(f"./{p}" for p in lost)], input=copy.read_bytes(), capture_output=True, check=False, timeout=120)
        if proc.returncode == 0:
            done.append(f"{host}: {len(lost)} file(s) put back in {fingerprint.DICOM_NODE_STATE}")
        else:  # the comparison that follows names what is still different
            done.append(f"{host}: putting back {len(lost)} file(s) failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    held_before = {e for e in map(json.loads, baseline.get("fw", {}).get("sets", {}).get(f"inet/{TABLE}/quarantine", [])) if isinstance(e, str)}
    for address, entry in sorted(response.quarantined(lab).items()):
        if address not in held_before:
            response.release_address(lab, address, "scenario reset: quarantined during the run")
            done.append(f"fw: {entry['host'] or address} released from quarantine ({entry['reason']})")
    fw = lab.container_name(lab.router.name)
    for name in RUNTIME_SETS:
        docker("exec", fw, "nft", "flush", "set", "inet", TABLE, name)
    return done


SETTLE = (0, 3, 6)  # seconds to wait before each comparison: a forward to the VNA may land after the first


def run_reset_actions(lab: Lab, scenario: Scenario) -> list[dict[str, Any]]:
    """The scenario's reset actions, once per run (they get the run's results as CONTEXT['run']): a
    second reset must not flip a byte back again. Each as {id, title, from, result, ok}; [] when
    there was no run since the last reset, or they already ran. A vulnerable run's reset runs them
    before the lab's own `up` (the directory a W6 run locked is unlocked before `up` records it)."""
    folder = run_dir(lab, scenario)
    if not (folder / "baseline.json").is_file():
        return []
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {"steps": []}
    if run.get("reset_actions_done"):
        return []
    context = {**lab_context(lab), "mode": run.get("mode"), "since": run.get("started"),
               "run": {s["id"]: s["result"] for s in run["steps"]}}
    actions = []
    for action in scenario.reset:
        result = run_action(lab, scenario, action, context)
        actions.append({"id": action.id, "title": action.title, "from": action.host, "result": result, "ok": "error" not in result})
    if (folder / "run.json").is_file() and all(a["ok"] for a in actions):
        (folder / "run.json").write_text(json.dumps({**run, "reset_actions_done": True}, indent=1))
    return actions


def reset_scenario(lab: Lab, scenario: Scenario, done: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Put back what the run changed: the scenario's reset actions (run_reset_actions; ``done``:
    those that already ran before the lab's own `up`), then _undo_additions; then compare the
    fingerprint with the baseline, a few times while late effects settle. The record: {scenario,
    actions, undone, differences, equal}. With no run since the last reset: {..., "equal": True, "nothing": True}."""
    from . import fingerprint

    folder = run_dir(lab, scenario)
    if not (folder / "baseline.json").is_file():
        shutil.rmtree(overlay_dir(lab, scenario), ignore_errors=True)
        return {"scenario": scenario.id, "nothing": True, "actions": list(done or []), "undone": [], "differences": [], "equal": True}
    baseline = json.loads((folder / "baseline.json").read_text())
    actions = list(done or []) + run_reset_actions(lab, scenario)
    undone: list[str] = []
    diff: list[str] = []
    fingerprint.settle(lab)  # a study the run stored reaches the VNA before the additions are read
    for wait in SETTLE:
        time.sleep(wait)
        undone += _undo_additions(lab, baseline, folder)
        diff = fingerprint.differences(baseline, fingerprint.take(lab))
        if not diff:
            break
    equal = not diff  # the lab is back whatever an action said; a failed action is reported beside
    if equal:
        forget(lab, scenario)
        shutil.rmtree(overlay_dir(lab, scenario), ignore_errors=True)  # the lab runs its own definition again
    return {"scenario": scenario.id, "actions": actions, "undone": undone, "differences": diff, "equal": equal}


def forget(lab: Lab, scenario: Scenario | None = None) -> None:
    """Drop a scenario's run state (all scenarios' without one): after its reset, or when the lab's
    state was replaced as a whole (snapshot restore, reset, down --volumes)."""
    folder = run_dir(lab, scenario) if scenario else run_dir_root(lab)
    shutil.rmtree(folder, ignore_errors=True)


def check_scenario(lab: Lab, scenario: Scenario, pytest_args: list[str] | None = None) -> dict[str, Any]:
    """Grade the lab with the scenario's integration checks (pytest, as ``pacslab verify`` runs
    them): per control "holds" when each of its tests passed, else "fails" with the failures.
    The record: {scenario, controls: {id: {verdict, tests: [{nodeid, outcome, message}]}}, holds}."""
    import sys

    folder = run_dir(lab, scenario)
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "check-results.json"
    results.unlink(missing_ok=True)
    node_ids = sorted({n for ids in scenario.controls.values() for n in ids})
    cmd = [sys.executable, "-m", "pytest", "-p", "pacslab.pytest_plugin", *node_ids, "--lab", str(lab.path),
           f"--pacslab-results={results}", "-q", "-p", "no:cacheprovider", *(pytest_args or [])]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    records = json.loads(results.read_text()) if results.is_file() else []
    controls = {}
    for cid, ids in scenario.controls.items():
        mine = [r for r in records if any(r["nodeid"] == n or r["nodeid"].startswith(n + "[") for n in ids)]
        ok = bool(mine) and all(r["outcome"] == "passed" for r in mine)
        controls[cid] = {"verdict": "holds" if ok else "fails",
                         "tests": [{"nodeid": r["nodeid"], "outcome": r["outcome"], "message": r.get("message", "")} for r in mine]}
    out = {"scenario": scenario.id, "controls": controls, "holds": all(c["verdict"] == "holds" for c in controls.values())}
    if not records:
        out["error"] = redact(proc.stdout.strip()[-1500:] or proc.stderr.strip()[-1500:])
    return out


# ---------------------------------------------------------------------------------------------
# Sheets

TEMPLATES_DIR = SCENARIOS_DIR / "templates"


def write_sheets(scenarios: list[Scenario], out: Path) -> list[Path]:
    """The student's and the trainer's sheet of each scenario, in Markdown and HTML (Jinja2, HTML
    autoescaped): ``out/<id>/{student,trainer}.{md,html}``. The student's has the story, the steps,
    the learning goals and the hints; the trainer's adds each step's expected result and evidence, the
    controls with their checks, and how to run, check and reset. The written paths."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    written = []
    for s in scenarios:
        folder = out / s.id
        folder.mkdir(parents=True, exist_ok=True)
        for audience in ("student", "trainer"):
            for ext in ("md", "html"):
                path = folder / f"{audience}.{ext}"
                path.write_text(env.get_template(f"sheet.{ext}.j2").render(s=s, trainer=audience == "trainer",
                                                                          categories=[CATEGORIES[c] for c in s.category]))
                written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Break-and-fix: the vulnerable overlay

JUSTIFICATION = "workshop scenario {id}, break-and-fix (pacslab scenario run --vulnerable): {repair}"


def overlay_dir(lab: Lab, scenario: Scenario) -> Path:
    from .plan import state_dir

    return state_dir(lab) / "overlay" / scenario.id


def derive_overlay(lab: Lab, scenario: Scenario) -> Lab:
    """Write the scenario's vulnerable overlay of ``lab`` (a copy of its folder, same lab name, with
    the overlay's host variables and flows and a waiver for each control it switches off) under
    .pacslab/<lab>/overlay/<id>/ and load it. ScenarioError with the loader's problems (nothing
    else is changed) when the overlay is refused; ValueError when the scenario has none."""
    from .topology import LabDefinitionError, load_lab

    if scenario.vulnerable is None:
        raise ValueError(f"{scenario.id} has no vulnerable overlay")
    v = scenario.vulnerable
    target = overlay_dir(lab, scenario)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(lab.path, target)
    header = f"# Overlay of {lab.path} by `pacslab scenario run {scenario.id} --vulnerable` (break-and-fix).\n"

    def update(path: Path, change: Any) -> None:
        data = (read_vars_file(path) if path.is_file() else None) or {}
        change(data)
        write_vars_file(path, data, header)

    # Each host's and the lab's variables go where Ansible reads them (pacslab.topology): a lab may
    # keep them in a .json, a file without a suffix, or a folder of files.
    for hname, variables in v.host_vars.items():
        for key, value in variables.items():
            update(vars_file_for(target, "host_vars", hname, key, f"{hname}.yml"), lambda d, k=key, x=value: d.update({k: x}))
    if v.flows:
        update(vars_file_for(target, "group_vars", "all", "lab_flows", "all/lab.yml"),
               lambda d: d.setdefault("lab_flows", []).extend(v.flows))
    waivers = [{"control": c, "justification": JUSTIFICATION.format(id=scenario.id, repair=v.repair)} for c in v.waives]
    update(vars_file_for(target, "group_vars", "all", "lab_waivers", "all/lab.yml"),
           lambda d: d.update(lab_waivers=[*(d.get("lab_waivers") or []), *waivers]))
    try:
        return load_lab(target)
    except LabDefinitionError as exc:
        raise ScenarioError(exc.problems) from exc


def refuse_other_open_runs(lab: Lab, scenario: Scenario) -> None:
    """ScenarioError naming the scenarios whose run has not been reset, other than this one: a reset
    deletes what was added since its own baseline, so two open runs would undo each other's."""
    open_runs = sorted(p.parent.name for p in run_dir_root(lab).glob("*/baseline.json") if p.parent.name != scenario.id)
    if open_runs:
        raise ScenarioError([Problem(_rel(run_dir_root(lab)), ", ".join(open_runs),
                                     f"not reset yet: `pacslab scenario reset {open_runs[0]}` before running {scenario.id}")])


def ensure_baseline(lab: Lab, scenario: Scenario) -> list[str]:
    """Take the fingerprint a reset must come back to, unless a run since the last reset took it,
    once the Orthanc hosts have nothing in flight (fingerprint.settle: up to 60 s with Orthanc's
    StableAge of 5 s), and keep a copy of each DICOM node's state folder beside it
    (state-<host>.tar, a few KB): a
    check run during the run (`scenario check` replays the clinical workflow) rewrites a modality's
    acquisition record and clears a workstation's received images, which deleting additions cannot
    bring back. Returns what was still in flight when the wait ran out (settle's words; [] once
    settled, and when the baseline was already taken): the baseline is taken either way."""
    from . import fingerprint

    folder = run_dir(lab, scenario)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "baseline.json").is_file():
        return []
    unsettled = fingerprint.settle(lab)  # what is on its way (a forward to the VNA) belongs to the baseline, not to the run
    for host in fingerprint.dicom_node_hosts(lab):
        copy = subprocess.run(["docker", "exec", lab.container_name(host), "tar", "-C", fingerprint.DICOM_NODE_STATE, "-cf", "-", "."],
                              capture_output=True, check=True, timeout=120).stdout
        (folder / f"state-{host}.tar").write_bytes(copy)
    (folder / "baseline.json").write_text(json.dumps(fingerprint.take(lab)))
    return unsettled


def last_mode(lab: Lab, scenario: Scenario) -> str | None:
    """The mode of the last run since the last reset (None: no run)."""
    record = run_dir(lab, scenario) / "run.json"
    return json.loads(record.read_text()).get("mode") if record.is_file() else None
