"""pacslab.scenario: scenario files are refused like a lab definition (file, key, reason), before
anything runs; expectations compare as written; a step script runs with its CONTEXT."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pacslab import scenario as sc
from pacslab.topology import REPO_ROOT, load_lab

from .conftest import DEFAULT_LAB, host, mutate

ALT_LAB = REPO_ROOT / "tests" / "labs" / "alt"


@pytest.mark.parametrize("lab_path", [DEFAULT_LAB, ALT_LAB], ids=["default", "alt"])
def test_every_shipped_scenario_loads_on_both_labs(lab_path: Path) -> None:
    """Each scenario loads where its hosts are deployed; the second lab plans the identity hosts
    and the attacker (W6), the bastion, the siem and the vendor engineer (W7), the IdP that accepts the
    insider's codes and the siem (W8) and the siem (W9), so those are left out there, naming them, and
    are no refusal."""
    left_out: dict[str, tuple[str, ...]] = {}
    scenarios = sc.load_all(load_lab(lab_path), left_out=left_out)
    both = ("defended", "vulnerable")
    expected = {"W2": both, "W3": both, "W4": both, "W5": both, "W6": both, "W7": both, "W8": both, "W9": both,
                "W10": ("defended",), "W12": both}
    if lab_path == ALT_LAB:
        del expected["W6"], expected["W7"], expected["W8"], expected["W9"]
    assert [s.id for s in scenarios] == list(expected)
    for s in scenarios:
        assert s.steps and s.controls
    assert {s.id: s.modes for s in scenarios} == expected
    assert left_out == ({"W6": ("attacker", "dir", "idp"), "W7": ("bastion", "siem", "vendor-eng"), "W8": ("idp", "siem"), "W9": ("siem",)}
                        if lab_path == ALT_LAB else {})


def test_a_scenario_the_lab_lacks_hosts_for_is_still_refused_by_id() -> None:
    """Asked for by id, W6 on the second lab is refused with every reason: its hosts are planned
    there, and the people whose passwords it uses are not defined."""
    with pytest.raises(sc.ScenarioError) as err:
        sc.find(load_lab(ALT_LAB), "W6")
    reasons = {(p.key, p.reason) for p in err.value.problems}
    assert ("attacker", "'attacker' is planned in lab 'alt': no container to run from") in reasons
    assert ("steps[4].passwords[0]", "'rad-ada': lab 'alt' has no such person (lab_people)") in reasons
    assert err.value.planned == ("attacker", "dir", "idp")


def test_a_misspelt_person_in_a_lab_that_deploys_every_host_is_a_refusal(w3: Path) -> None:
    """Twin: the lab deploys every host W3 needs, so a person it does not define is the file's
    fault: refused, and not merely left out."""
    edit(w3, lambda d: d["steps"][0].update(passwords=["rad-adda"]))
    with pytest.raises(sc.ScenarioError) as err:
        sc.load_all(load_lab(DEFAULT_LAB), root=w3.parent)
    assert [(p.key, p.reason) for p in err.value.problems] == [("steps[0].passwords[0]", "'rad-adda': lab 'default' has no such person (lab_people)")]
    assert err.value.planned == ()


@pytest.fixture
def w3(tmp_path: Path) -> Path:
    shutil.copytree(sc.SCENARIOS_DIR / "W3", tmp_path / "W3")
    return tmp_path / "W3"


def edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load((folder / "scenario.yml").read_text())
    change(data)
    (folder / "scenario.yml").write_text(yaml.safe_dump(data, sort_keys=False))


def refused(folder: Path, lab_path: Path = DEFAULT_LAB) -> list[tuple[str, str, str]]:
    with pytest.raises(sc.ScenarioError) as err:
        sc.load_scenario(folder, load_lab(lab_path))
    return [(p.file, p.key, p.reason) for p in err.value.problems]


ENROLLED = "tests/integration/test_imaging.py::test_enrolled_device_stores_over_tls"  # carries C-ACC-06 only
# case -> (edit, the key refused, the start of its reason), written out.
CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "unknown control": (lambda d: d["controls"].update({"C-XYZ-99": [ENROLLED]}),
                        "controls.C-XYZ-99", "not a control of the catalogue"),
    "control without its marker": (lambda d: d["controls"].update({"C-DAT-03": [ENROLLED]}),
                                   "controls.C-DAT-03[0]", "test_enrolled_device_stores_over_tls does not carry @pytest.mark.control('C-DAT-03')"),
    "no such test": (lambda d: d["controls"]["C-ACC-05"].append("tests/integration/test_imaging.py::test_nothing_like_it"),
                     "controls.C-ACC-05[1]", "tests/integration/test_imaging.py has no test test_nothing_like_it"),
    "no such test file": (lambda d: d["controls"]["C-ACC-05"].append("tests/integration/test_none.py::test_x"),
                          "controls.C-ACC-05[1]", "tests/integration/test_none.py: no such test file"),
    "unknown attacker": (lambda d: d.update(attacker="mod-xr"), "attacker", "'mod-xr': lab 'default' has no such host"),
    "planned step host": (lambda d: d["steps"][2].update({"from": "offsite"}), "steps[2].from",
                          "'offsite' is planned in lab 'default': no container"),
    "missing script": (lambda d: d["steps"][0].update(script="nothing_here.py"), "steps[0].script", "nothing_here.py: no such file"),
    "id is not the folder": (lambda d: d.update(id="W4"), "id", "'W4' is not the folder's name 'W3'"),
    "duplicate step id": (lambda d: d["steps"][1].update(id="claim-ct-ae-title"), "steps[1].id", "'claim-ct-ae-title' is used twice"),
    "unknown category": (lambda d: d.update(category=["phishing"]), "category[0]", "'phishing' is not one of"),
    "missing expectation": (lambda d: d["steps"][0]["expect"].pop("defended"), "steps[0].expect", "'defended' is a required property"),
    "unknown key": (lambda d: d.update(difficulty="hard"), "(document)", "Additional properties are not allowed ('difficulty'"),
    "wrong format version": (lambda d: d.update(schema_version=2), "schema_version", "1 was expected"),
    "vulnerable outcome without overlay": (lambda d: d.pop("vulnerable"),
                                           "steps[0].expect", "a vulnerable outcome, but the scenario has no vulnerable overlay"),
    "overlay without a step's outcome": (lambda d: d["steps"][0]["expect"].pop("vulnerable"),
                                         "steps[0].expect", "no vulnerable outcome: with a vulnerable overlay every step needs one"),
    "overlay waives another control": (lambda d: d.update(vulnerable={"waives": ["C-PRT-05"], "repair": "r"}),
                                       "vulnerable.waives[0]", "C-PRT-05 is not one of the scenario's controls"),
    "password of an unknown person": (lambda d: d["steps"][1].update(passwords=["nobody"]),
                                      "steps[1].passwords[0]", "'nobody': lab 'default' has no such person (lab_people)"),
    "codes of an unknown person": (lambda d: d["steps"][1].update(codes=["nobody"]),
                                   "steps[1].codes[0]", "'nobody': lab 'default' has no such person (lab_people)"),
    "overlay on an unknown host": (lambda d: d.update(vulnerable={"waives": ["C-ACC-05"], "repair": "r", "host_vars": {"nohost": {"a": 1}}}),
                                   "vulnerable.host_vars.nohost", "'nohost': lab 'default' has no such host"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_scenario_is_refused_with_file_key_and_reason(w3: Path, case: str) -> None:
    change, key, reason = CASES[case]
    edit(w3, change)
    problems = refused(w3)
    assert any(f.endswith("W3/scenario.yml") and k == key and r.startswith(reason) for f, k, r in problems), problems


def test_a_yaml_error_names_its_line(w3: Path) -> None:
    (w3 / "scenario.yml").write_text("id: W3\ntitle: [unclosed\n")
    [(file, key, reason)] = refused(w3)
    assert key == "line 3" and reason.startswith("not YAML"), (file, key, reason)


def test_a_host_the_other_lab_lacks_is_refused_there(w3: Path, lab_copy: Path) -> None:
    """Hosts are checked against the lab the scenario runs on: remove mod-mr from a lab and W3's
    attacker is refused there, by name."""
    def drop(hosts: dict[str, Any], lab_vars: dict[str, Any], flows: dict[str, Any]) -> None:
        host(hosts, "mod-mr")["lab_state"] = "planned"
    mutate(lab_copy, drop)
    assert ("attacker", "'mod-mr' is planned in lab 'default': no container to run from") in [(k, r) for _, k, r in refused(w3, lab_copy)]


def test_an_unknown_id_names_the_ids_there_are() -> None:
    with pytest.raises(KeyError, match=r"no scenario 'W99' \(there are: .*W3"):
        sc.find(load_lab(DEFAULT_LAB), "W99")


@pytest.mark.parametrize("result, expected, problems", [
    ({"outcome": "rejected", "reject": {"reason_name": "x"}}, {"outcome": "rejected", "reject.reason_name": "x"}, []),
    ({"outcome": "established"}, {"outcome": "rejected"}, ["outcome: expected 'rejected', seen 'established'"]),
    ({"outcome": "rejected", "reject": None}, {"reject.reason_name": "x"}, ["reject.reason_name: expected 'x', absent"]),
    ({"error": "exit 1: boom"}, {"stored": 0}, ["stored: expected 0, absent"]),
    ({"stored": False}, {"stored": 0}, ["stored: expected 0, seen False"]),  # false is not 0
    ({"found": 0}, {"found": False}, ["found: expected False, seen 0"]),
    ({"status": "0x0000", "n": 1.0}, {"status": "0x0000"}, []),
])
def test_mismatches_compare_written_out_values(result: dict[str, Any], expected: dict[str, Any], problems: list[str]) -> None:
    assert sc.mismatches(result, expected) == problems


def test_a_step_script_runs_with_its_context_from_stdin() -> None:
    """BOOT, as docker exec runs it, here with the local python3: the script reads CONTEXT and its
    last line is the result; nothing of it is in argv."""
    envelope = {"name": "W0/echo.py", "source": "import json\nprint('noise')\nprint(json.dumps({'got': CONTEXT['args']['x']}))\n",
                "context": {"args": {"x": 7}}}
    out = subprocess.run([sys.executable, "-c", sc.BOOT], input=json.dumps(envelope), capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == {"got": 7}


def test_sheets_keep_the_answers_for_the_trainer_and_escape_html(w3: Path, tmp_path: Path) -> None:
    edit(w3, lambda d: d.update(story="A <script>alert(1)</script> story & more."))
    s = sc.load_scenario(w3, load_lab(DEFAULT_LAB))
    written = sc.write_sheets([s], tmp_path / "out")
    assert sorted(p.name for p in written) == ["student.html", "student.md", "trainer.html", "trainer.md"]
    sheet = {p.name: p.read_text() for p in written}
    evidence = s.steps[0].expect["defended"].evidence
    assert evidence.split(":")[0] in sheet["trainer.md"] and "calling-AE-title-not-recognized" in sheet["trainer.md"]
    assert "calling-AE-title-not-recognized" not in sheet["student.md"] and evidence.split(":")[0] not in sheet["student.md"]
    assert "test_store_from_unlisted_application_is_refused" in sheet["trainer.html"] and "test_store" not in sheet["student.html"]
    assert s.hints[0] in sheet["student.md"]
    assert "A &lt;script&gt;alert(1)&lt;/script&gt; story &amp; more." in sheet["student.html"] and "<script>" not in sheet["student.html"]


def test_the_overlay_is_the_lab_with_its_switches_waivers_and_flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W12's overlay: the same lab (name, hosts, addresses) with firewall_dicom_limits false on the fw
    and C-PRT-05 waived; W2's: one flow more, from the legacy zone to the datacenter, and C-ACC-04 and
    C-ACC-08 waived. The lab's own folder is untouched."""
    from pacslab import plan

    monkeypatch.setattr(plan, "state_dir", lambda lab: tmp_path / lab.name)
    lab = load_lab(DEFAULT_LAB)
    before = {p: p.read_bytes() for p in DEFAULT_LAB.rglob("*.yml")}
    w12 = sc.derive_overlay(lab, sc.find(lab, "W12"))
    assert (w12.name, w12.prefix, w12.path) == ("default", "pacslab", tmp_path / "default" / "overlay" / "W12")
    assert w12.host_vars["fw"]["firewall_dicom_limits"] is False and [w.control for w in w12.waivers] == ["C-PRT-05"]
    assert [w.justification for w in w12.waivers][0].startswith("workshop scenario W12, break-and-fix")
    w2 = sc.derive_overlay(lab, sc.find(lab, "W2"))
    assert [f.id for f in w2.flows] == [f.id for f in lab.flows] + ["F90"]
    assert (str(w2.flows[-1].sources[0]), str(w2.flows[-1].dest), w2.flows[-1].ports) == ("zone:legacy", "zone:datacenter", None)
    assert sorted(w.control for w in w2.waivers) == ["C-ACC-04", "C-ACC-08"]
    w3 = sc.derive_overlay(lab, sc.find(lab, "W3"))
    assert {k: w3.host_vars["pacs"][k] for k in ("orthanc_dicom_allowlist", "orthanc_dicom_peer_certificates")} == {
        "orthanc_dicom_allowlist": False, "orthanc_dicom_peer_certificates": False}
    assert sorted(w.control for w in w3.waivers) == ["C-ACC-05", "C-ACC-06"] and w3.flows == lab.flows
    w4 = sc.derive_overlay(lab, sc.find(lab, "W4"))
    assert w4.host_vars["pacs"]["orthanc_md5"] is False and [w.control for w in w4.waivers] == ["C-DAT-03"]
    assert {p: p.read_bytes() for p in DEFAULT_LAB.rglob("*.yml")} == before


def test_the_overlay_writes_where_ansible_reads(lab_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab that keeps its variables in the other forms Ansible reads (DataLoader.find_vars_files):
    group_vars/all as one JSON file, the fw's host_vars as JSON, the PACS's as a folder whose later
    file sets orthanc_md5 again. Each overlay goes into the file Ansible uses for that variable (a
    file beside it would be refused: Ansible reads one of them alone)."""
    from pacslab import plan
    from pacslab.topology import read_vars_file

    monkeypatch.setattr(plan, "state_dir", lambda lab: tmp_path / lab.name)
    folder = lab_copy / "group_vars" / "all"
    merged = {k: v for f in sorted(folder.glob("*.yml")) for k, v in yaml.safe_load(f.read_text()).items()}
    shutil.rmtree(folder)
    (lab_copy / "group_vars" / "all.json").write_text(json.dumps(merged, default=str))
    (lab_copy / "host_vars" / "fw.json").write_text('{"firewall_dicom_limits": true}')
    (lab_copy / "host_vars" / "pacs").mkdir()
    (lab_copy / "host_vars" / "pacs.yml").rename(lab_copy / "host_vars" / "pacs" / "main.yml")
    (lab_copy / "host_vars" / "pacs" / "zz-integrity.yml").write_text("orthanc_md5: true\n")
    lab = load_lab(lab_copy)
    w12 = sc.derive_overlay(lab, sc.find(lab, "W12"))
    assert w12.host_vars["fw"]["firewall_dicom_limits"] is False and [w.control for w in w12.waivers] == ["C-PRT-05"]
    assert json.loads((w12.path / "host_vars" / "fw.json").read_text()) == {"firewall_dicom_limits": False}
    assert [w["control"] for w in json.loads((w12.path / "group_vars" / "all.json").read_text())["lab_waivers"]] == ["C-PRT-05"]
    w4 = sc.derive_overlay(lab, sc.find(lab, "W4"))
    assert w4.host_vars["pacs"]["orthanc_md5"] is False
    assert read_vars_file(w4.path / "host_vars" / "pacs" / "zz-integrity.yml") == {"orthanc_md5": False}
    w3 = sc.derive_overlay(lab, sc.find(lab, "W3"))
    assert {k: w3.host_vars["pacs"][k] for k in ("orthanc_dicom_allowlist", "orthanc_dicom_peer_certificates", "orthanc_md5")} == {
        "orthanc_dicom_allowlist": False, "orthanc_dicom_peer_certificates": False, "orthanc_md5": True}
    assert sorted(p.name for p in (w3.path / "host_vars" / "pacs").iterdir()) == ["main.yml", "zz-integrity.yml"]


def test_an_overlay_the_lab_refuses_is_refused_before_anything_changes(w3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacslab import plan

    monkeypatch.setattr(plan, "state_dir", lambda lab: tmp_path / lab.name)
    edit(w3, lambda d: (d.update(vulnerable={"waives": ["C-ACC-05"], "repair": "r", "flows": [{"id": "BAD", "from": ["mod-mr"], "to": "pacs",
                                                                                            "proto": "tcp", "ports": [1], "purpose": "x"}]}),
                        [st["expect"].update(vulnerable={"result": {"x": 1}, "evidence": "e"}) for st in d["steps"]]))
    lab = load_lab(DEFAULT_LAB)
    with pytest.raises(sc.ScenarioError) as err:
        sc.derive_overlay(lab, sc.load_scenario(w3, lab))
    assert any(p.key.endswith("(BAD).id") and "flow ids look like F01" in p.reason for p in err.value.problems), err.value


@pytest.mark.parametrize("stdout, stderr, rc, expected", [
    ('noise\n{"outcome": "rejected", "note": "pw S3CRETVALUE-1234567890abcdef"}\n', "", 0,
     {"outcome": "rejected", "note": "pw [redacted secret]"}),
    ("", "", 0, {"error": "exit 0: "}),
    ('["not", "an", "object"]\n', "", 0, {"error": 'exit 0: ["not", "an", "object"]'}),
    ("", "Traceback ...\nKeyError: 'acquire' S3CRETVALUE-1234567890abcdef", 1,
     {"error": "exit 1: Traceback ...\nKeyError: 'acquire' [redacted secret]"}),
    ("", "", 124, {"error": "no result within 300 s (the script was stopped)"}),
])
def test_run_action_reports_what_the_script_did(w3: Path, monkeypatch: pytest.MonkeyPatch, stdout: str, stderr: str, rc: int,
                                                 expected: dict[str, Any]) -> None:
    """The step's script under `timeout` in its container, its CONTEXT on stdin (never in argv); its
    last line is the result, redacted; anything else is an error that says what happened."""
    calls: list[tuple[tuple[str, ...], str]] = []

    def fake_docker(*args: str, input: str = "", **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append((args, input))
        return subprocess.CompletedProcess(args, rc, stdout, stderr)

    monkeypatch.setattr(sc, "docker", fake_docker)
    monkeypatch.setattr(sc, "secret_values", lambda: ["S3CRETVALUE-1234567890abcdef"])
    monkeypatch.setattr("pacslab.redact.secret_values", lambda *a: ["S3CRETVALUE-1234567890abcdef"])
    lab = load_lab(DEFAULT_LAB)
    s = sc.load_scenario(w3, lab)
    assert sc.run_action(lab, s, s.steps[0], {"args": {}, "secret": "S3CRETVALUE-1234567890abcdef"}) == expected
    [(argv, stdin)] = calls
    assert argv[:6] == ("exec", "-i", "pacslab-mod-mr", "timeout", "-k", "5") and argv[7:9] == ("python3", "-c")
    assert "S3CRETVALUE" not in " ".join(argv) and json.loads(stdin)["context"]["args"] == s.steps[0].args


def docker_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], str]]:
    """Every `docker` call the runner makes, as (argv, stdin), each answered with a script's {"ok": true}."""
    calls: list[tuple[tuple[str, ...], str]] = []

    def fake_docker(*args: str, input: str = "", **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append((args, input))
        return subprocess.CompletedProcess(args, 0, '{"ok": true}\n', "")

    monkeypatch.setattr(sc, "docker", fake_docker)
    return calls


def test_a_step_gets_the_passwords_it_names_on_stdin_only(w3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that names people in `passwords` gets their passwords (as up generated them, from the
    lab's secrets) in CONTEXT['passwords'] on stdin, never in argv; the document shows whose, never
    the value; without the secret (no up yet) the step is an error that says so."""
    edit(w3, lambda d: d["steps"][0].update(passwords=["rad-ada"]))
    calls = docker_calls(monkeypatch)
    monkeypatch.setattr(sc, "state_dir", lambda lab: tmp_path)
    lab = load_lab(DEFAULT_LAB)
    s = sc.load_scenario(w3, lab)
    assert s.document()["steps"][0]["passwords"] == ["rad-ada"]
    assert sc.run_action(lab, s, s.steps[0], {}) == {"error": "no password of 'rad-ada' in the lab's secrets: run `pacslab up` first"}
    assert calls == []
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "person-rad-ada").write_text("Pw-of-ada-1234567890\n")
    assert sc.run_action(lab, s, s.steps[0], {}) == {"ok": True}
    [(argv, stdin)] = calls
    assert "Pw-of-ada" not in " ".join(argv) and json.loads(stdin)["context"]["passwords"] == {"rad-ada": "Pw-of-ada-1234567890"}
    assert json.loads(stdin)["context"]["args"] == s.steps[0].args


def test_a_step_gets_the_codes_it_names_on_stdin_only_and_none_the_idp_took(w3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that names people in `codes` gets, in CONTEXT['codes'] on stdin, their TOTP codes by
    RFC 6238 step from the current step on, leaving out the steps the IdP already accepted a code
    of (RFC 6238 5.2); never in argv. The codes are RFC 6238 appendix B's test vectors (SHA-1 seed
    "12345678901234567890", the last six digits) at T = 1111111109 s: step 37037036 -> 081804,
    37037037 -> 050471. Without the seed (no up yet, or an empty file) or when the IdP cannot be
    asked which steps it took, the step is an error that says so, and nothing runs."""
    edit(w3, lambda d: d["steps"][0].update(codes=["rad-ada"]))
    calls = docker_calls(monkeypatch)
    accepted = {"step": 37037035}
    monkeypatch.setattr(sc, "state_dir", lambda lab: tmp_path)
    monkeypatch.setattr(sc.oidc, "last_step", lambda lab, idp, user: accepted["step"] if (idp, user) == ("idp", "rad-ada") else -2)
    monkeypatch.setattr("pacslab.people.time.time", lambda: 1111111109.0)
    lab = load_lab(DEFAULT_LAB)
    s = sc.load_scenario(w3, lab)
    assert s.document()["steps"][0]["codes"] == ["rad-ada"]
    assert sc.run_action(lab, s, s.steps[0], {}) == {"error": "no TOTP seed of 'rad-ada' in the lab's secrets: run `pacslab up` first"}
    assert calls == []
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "totp-rad-ada").write_text("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")
    assert sc.run_action(lab, s, s.steps[0], {}) == {"ok": True}
    accepted["step"] = 37037036
    assert sc.run_action(lab, s, s.steps[0], {}) == {"ok": True}
    (argv, first), (_, second) = calls
    codes, later = json.loads(first)["context"]["codes"]["rad-ada"], json.loads(second)["context"]["codes"]["rad-ada"]
    assert (codes["37037036"], codes["37037037"], len(codes)) == ("081804", "050471", 6)
    assert "37037036" not in later and later["37037037"] == "050471"
    assert json.loads(first)["context"]["totp_step"] == 30  # RFC 6238's default step, the IdP's
    assert "081804" not in " ".join(argv) and "050471" not in " ".join(argv)

    def idp_down(lab: Any, idp: str, user: str) -> int:
        raise RuntimeError("docker exec pacslab-idp failed: container is not running")

    monkeypatch.setattr(sc.oidc, "last_step", idp_down)
    assert sc.run_action(lab, s, s.steps[0], {}) == {
        "error": "could not read which codes of 'rad-ada' the IdP has taken: docker exec pacslab-idp failed: container is not running"}
    (tmp_path / "secrets" / "totp-rad-ada").write_text("")
    assert sc.run_action(lab, s, s.steps[0], {}) == {"error": "no TOTP seed of 'rad-ada' in the lab's secrets: run `pacslab up` first"}
    assert len(calls) == 2
