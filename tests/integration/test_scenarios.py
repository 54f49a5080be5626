"""The workshop scenarios on the running lab (issue 11): each runs from its attacker's position and
every step ends as the scenario expects in the defended lab; its reset puts back exactly what it
changed, seen by the lab's state fingerprint and, independently, by the instance counts of every
Orthanc. The twin: before the reset, the fingerprint names what the run left behind."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from pacslab import cli, fingerprint
from pacslab import scenario as sc
from pacslab.docker import docker
from pacslab.probes import imaging as im
from pacslab.topology import Lab

SCENARIO_IDS = ["W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "W12"]


def counts(lab: Lab) -> dict[str, int]:
    return {h: im.instance_count(lab, h) for h in fingerprint.orthanc_hosts(lab)}


def baseline_taken(lab: Lab, scenario: sc.Scenario) -> None:
    """The run's baseline, taken as `scenario run` takes it once nothing is in flight (an earlier
    test's upload still on its way to the VNA is no addition of this run). A wait that ran out
    fails the test and leaves no open run behind (it would refuse every later scenario)."""
    sc.refuse_other_open_runs(lab, scenario)
    unsettled = sc.ensure_baseline(lab, scenario)
    if unsettled:
        sc.forget(lab, scenario)
    assert unsettled == []


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_a_scenario_runs_as_expected_and_its_reset_puts_the_lab_back(running_lab: Lab, scenario_id: str, evidence) -> None:
    lab = running_lab
    scenario = sc.find(lab, scenario_id)
    for control in scenario.controls:
        evidence.setdefault("controls", []).append(control)
    sc.reset_scenario(lab, scenario)  # a run an earlier session left behind
    # the run's baseline, then the test's own fingerprint of the settled lab
    baseline_taken(lab, scenario)
    before, counted = fingerprint.take(lab), counts(lab)
    record = sc.run_scenario(lab, scenario, "defended")
    left = fingerprint.differences(before, fingerprint.take(lab))
    reset = sc.reset_scenario(lab, scenario)
    after = fingerprint.take(lab)
    evidence.update(steps={s["id"]: s["result"] for s in record["steps"]}, left_by_the_run=left, reset=reset["undone"])
    assert [(s["id"], s["problems"]) for s in record["steps"] if not s["as_expected"]] == []
    assert reset["equal"] and reset["differences"] == [], reset
    assert fingerprint.differences(before, after) == [] and counts(lab) == counted


def test_the_fingerprint_names_what_a_run_left_behind(running_lab: Lab, evidence) -> None:
    """Twin: W4 leaves one image on the PACS (its acquire step) with a byte flipped; before the reset the
    fingerprint names the added instance and file on the PACS; after it, nothing."""
    lab = running_lab
    scenario = sc.find(lab, "W4")
    sc.reset_scenario(lab, scenario)
    baseline_taken(lab, scenario)
    before = fingerprint.take(lab)
    record = sc.run_scenario(lab, scenario, "defended")
    left = fingerprint.differences(before, fingerprint.take(lab))
    reset = sc.reset_scenario(lab, scenario)
    evidence.update(left=left)
    instance: Any = record["steps"][1]["result"]["instance"]
    assert any(line.startswith("orthanc:pacs: 1 instances added (") and instance in line for line in left), left
    assert any(line.startswith("orthanc:pacs: 1 files added") for line in left), left
    assert reset["equal"], reset


def _node_file(lab: Lab, host: str, name: str, content: str | None = None) -> str | None:
    """Read a file of a DICOM node's state folder (None: absent), or write it first (content given)."""
    path = f"{fingerprint.DICOM_NODE_STATE}/{name}"
    if content is not None:
        docker("exec", "-i", lab.container_name(host), "sh", "-c", 'cat > "$1"', "write", path, input=content)
    proc = docker("exec", lab.container_name(host), "cat", path, check=False)
    return proc.stdout if proc.returncode == 0 else None


@pytest.mark.parametrize("kept", [True, False], ids=["copies-kept", "copies-lost"])
def test_a_reset_puts_back_node_state_that_changed_during_the_run(running_lab: Lab, kept: bool, evidence) -> None:
    """A check run during a run (`scenario check W4` replays the clinical workflow) rewrites a
    modality's acquisition record and clears a workstation's received images: files the baseline
    had, which deleting additions cannot bring back. The reset puts them back from the copies the
    run kept of each DICOM node's state folder. Twin: with those copies gone, the reset names both
    files and says the lab is not back."""
    lab = running_lab
    scenario = sc.find(lab, "W2")
    host = fingerprint.dicom_node_hosts(lab)[0]
    rewritten, cleared = "pacslab-test-rewritten.json", "pacslab-test-cleared.dcm"
    sc.reset_scenario(lab, scenario)
    try:
        _node_file(lab, host, rewritten, '{"acquired": ["A1"]}\n')
        _node_file(lab, host, cleared, "DICM\n")
        sc.run_scenario(lab, scenario, "defended")
        _node_file(lab, host, rewritten, '{"acquired": ["A1", "A2"]}\n')
        docker("exec", lab.container_name(host), "rm", "-f", f"{fingerprint.DICOM_NODE_STATE}/{cleared}")
        if not kept:
            for copy in sc.run_dir(lab, scenario).glob("state-*.tar"):
                copy.unlink()
        reset = sc.reset_scenario(lab, scenario)
        evidence.update(undone=reset["undone"], differences=reset["differences"])
        if kept:
            assert reset["equal"] and f"{host}: 2 file(s) put back in {fingerprint.DICOM_NODE_STATE}" in reset["undone"], reset
            assert _node_file(lab, host, rewritten) == '{"acquired": ["A1"]}\n' and _node_file(lab, host, cleared) == "DICM\n"
        else:
            assert not reset["equal"] and reset["differences"] == [f"dicom_node:{host}: {cleared}, {rewritten} differ"], reset
    finally:
        docker("exec", lab.container_name(host), "rm", "-f", f"{fingerprint.DICOM_NODE_STATE}/{rewritten}",
                  f"{fingerprint.DICOM_NODE_STATE}/{cleared}")
        sc.forget(lab, scenario)  # the twin's run stays open (the lab was not back); the files are gone again either way


def test_check_grades_with_the_integration_checks_of_each_control(running_lab: Lab, evidence) -> None:
    """`scenario check W3` runs the tests the scenario names for C-ACC-05 and C-ACC-06 (pytest, the
    same tests as `pacslab verify`): each control holds, by the outcome of exactly those tests."""
    result = sc.check_scenario(running_lab, sc.find(running_lab, "W3"))
    evidence.update(controls={c: [t["nodeid"] for t in v["tests"]] for c, v in result["controls"].items()})
    assert result["holds"] and {c: v["verdict"] for c, v in result["controls"].items()} == {"C-ACC-05": "holds", "C-ACC-06": "holds"}
    names = {c: sorted({t["nodeid"].split("::")[1].split("[")[0] for t in v["tests"]}) for c, v in result["controls"].items()}
    assert names == {"C-ACC-05": ["test_store_from_unlisted_application_is_refused"], "C-ACC-06": ["test_unauthenticated_device_is_refused"]}
    assert all(t["outcome"] == "passed" for v in result["controls"].values() for t in v["tests"])
    assert len(result["controls"]["C-ACC-05"]["tests"]) == 3 and len(result["controls"]["C-ACC-06"]["tests"]) == 5


def _last_json(capsys: pytest.CaptureFixture[str]) -> Any:
    """The JSON document a --json command printed last (an `up` it ran printed its own lines before)."""
    out = capsys.readouterr().out
    start = 0 if out.startswith("{") else out.rindex("\n{") + 1
    return json.loads(out[start:])


# What `scenario check` says of each control while the lab runs a scenario's vulnerable overlay,
# written out: every control the overlay switches off fails its integration checks (W6 switches off
# the second factor only: the directory's lockout and the exposure hold). W8 (C-PRT-01, C-DAT-06 and
# C-DET-07 fail) is left out of the suite to keep `make test` under 45 minutes (290-390 s, three
# times another overlay's): its break-and-fix passed by hand on 5 December; `pacslab scenario run
# W8 --vulnerable`, `check`, `reset`.
VULNERABLE_VERDICTS = {
    "W3": {"C-ACC-05": "fails", "C-ACC-06": "fails"},
    "W4": {"C-DAT-03": "fails"},
    "W5": {"C-DAT-02": "fails", "C-ACC-06": "fails"},
    "W6": {"C-ACC-01": "holds", "C-ACC-02": "holds", "C-ACC-07": "fails"},
    "W7": {"C-MNT-01": "fails"},
    "W9": {"C-DET-02": "fails"},
    "W12": {"C-PRT-05": "fails"},
}


# Break-and-fix takes two partial `up`s per overlay: the seven cost about 650 s of `make test` on the
# 2-core machine (W5 128-137 s, W9 93-108 s, W12 99 s, W3 91 s, W6 87 s, W4 77 s, W7 74-77 s, 4 to 6
# December), which must stay under 45 minutes. A third of them a day (214 s on the dearest day) was
# not enough there: CI took 3,006 s. Each run of the suite now takes one overlay, by the day (UTC):
# the day's number is its weekday (0 on Monday) plus its ISO week, modulo 7, so each ISO week (Monday
# to Sunday) proves every overlay, and an overlay moves one weekday earlier every week (by the weekday
# alone, one that ran on Sundays would never run where CI runs on working days only).
# PACSLAB_BREAK_AND_FIX=all runs all seven (about 9 minutes more); =0 to 6 runs that day's overlay
# (a red run repeated on another day); =W3,W6 runs those.
BREAK_AND_FIX_DAY = {"W3": 0, "W4": 1, "W5": 2, "W6": 3, "W7": 4, "W12": 5, "W9": 6}
assert set(BREAK_AND_FIX_DAY) == set(VULNERABLE_VERDICTS), "each overlay of VULNERABLE_VERDICTS needs its day in BREAK_AND_FIX_DAY"
assert sorted(BREAK_AND_FIX_DAY.values()) == list(range(7)), "one overlay a day of the week, each day one"


def _todays(scenario: str) -> Any:
    """``scenario`` as a parameter, skipped (with the reason) on the days another overlay runs, or
    when PACSLAB_BREAK_AND_FIX chooses others. pytest.UsageError: a value it does not take."""
    day = datetime.now(UTC).date()
    chosen = os.environ.get("PACSLAB_BREAK_AND_FIX", "").strip()
    if chosen == "all":
        return scenario
    if chosen.isdigit() and int(chosen) < len(BREAK_AND_FIX_DAY):
        picked, why = [s for s, d in BREAK_AND_FIX_DAY.items() if d == int(chosen)], f"PACSLAB_BREAK_AND_FIX={chosen} chose"
    elif chosen:
        picked, why = [s.strip() for s in chosen.split(",")], f"PACSLAB_BREAK_AND_FIX={chosen} chose"
        if not set(picked) <= set(BREAK_AND_FIX_DAY):
            raise pytest.UsageError(f"PACSLAB_BREAK_AND_FIX={chosen!r}: takes all, a day's number (0 to {len(BREAK_AND_FIX_DAY) - 1}) "
                                    f"or overlays of {', '.join(BREAK_AND_FIX_DAY)} separated by commas")
    else:
        today = (day.weekday() + day.isocalendar().week) % len(BREAK_AND_FIX_DAY)
        picked, why = [s for s, d in BREAK_AND_FIX_DAY.items() if d == today], f"break-and-fix runs one overlay a day: on {day} (day {today})"
    if scenario in picked:
        return scenario
    return pytest.param(scenario, marks=pytest.mark.skip(reason=f"{why} {', '.join(picked)}; PACSLAB_BREAK_AND_FIX=all runs every one"))


@pytest.mark.lifecycle
@pytest.mark.parametrize("scenario", [_todays(s) for s in VULNERABLE_VERDICTS])
def test_break_and_fix(running_lab: Lab, scenario: str, capsys, evidence) -> None:
    """`scenario run ID --vulnerable` brings the lab into the scenario's overlay (a switch off, its
    controls waived) and every step goes as the vulnerable outcome says: W3's forged studies are
    stored, W4's altered image is "unverifiable", W5's capture holds the patient's name, W6's leaked password alone
    opens the viewer, W7's ended contract opens a shell and the phished password a tunnel, W9's object carrying malware is stored and
    served, W12's flood is neither limited nor logged.
    `scenario check ID` then names each control as failing; `scenario reset ID` brings the lab's
    own definition back, and the fingerprint equals the one before the run."""
    lab = running_lab
    baseline_taken(lab, sc.find(lab, scenario))  # as `scenario run` takes it (then it takes none)
    before = fingerprint.take(lab)
    rc_run = cli.main(["scenario", "run", scenario, "--vulnerable", "--json", "--lab", str(lab.path)])
    run = _last_json(capsys)
    rc_check = cli.main(["scenario", "check", scenario, "--json", "--lab", str(lab.path)])
    check = _last_json(capsys)
    rc_reset = cli.main(["scenario", "reset", scenario, "--json", "--lab", str(lab.path)])
    reset = _last_json(capsys)
    verdicts = {c: v["verdict"] for c, v in check["controls"].items()}
    evidence.update(steps={s["id"]: s["result"] for s in run["steps"]}, check=verdicts, reset=reset["undone"])
    assert rc_run == 0 and [(s["id"], s["problems"]) for s in run["steps"] if not s["as_expected"]] == []
    assert rc_check == 5 and verdicts == VULNERABLE_VERDICTS[scenario]
    assert rc_reset == 0 and reset["equal"], reset
    assert fingerprint.differences(before, fingerprint.take(lab)) == []
