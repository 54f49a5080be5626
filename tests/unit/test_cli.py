"""CLI: argument errors, a missing Docker engine, documented exit codes, what counts as up, the default
lab from any folder, doctor --lab, the shape of status --json, one changing run per lab, report."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from pacslab import cli
from pacslab.engine import RunResult, last_converged, record_up
from pacslab.topology import REPO_ROOT

from .conftest import host, mutate


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "pacslab.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=120)


@pytest.mark.parametrize("args", [[], ["launch"], ["up", "--nope"], ["down", "--lab"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == cli.EXIT_USAGE
    assert "usage: pacslab" in proc.stderr


@pytest.mark.parametrize("margin", ["nan", "inf", "-1", "86401"])
def test_a_capture_margin_outside_0_to_a_day_is_refused_before_the_lab_is_asked(margin: str) -> None:
    proc = run("capture", "1", "--margin", margin)
    assert proc.returncode == cli.EXIT_USAGE
    assert f"--margin {float(margin)}: seconds before and after the alert, 0 to 86400" in proc.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["open", "adm-pat"], "'adm-pat' is no vendor of lab 'default' (vendors: vnd-acme, vnd-old; see `pacslab users`)"),
    (["open", "nobody"], "'nobody' is no vendor of lab 'default' (vendors: vnd-acme, vnd-old; see `pacslab users`)"),
    (["open", "vnd-old"], "vnd-old is expired (people.yml): a window would cover sign-ins that must not happen"),
    (["open", "vnd-acme", "--minutes", "nan"], "--minutes nan: more than 0 and at most 10080 (a week)"),
    (["open", "vnd-acme", "--minutes", "0"], "--minutes 0: more than 0 and at most 10080 (a week)"),
    (["open", "vnd-acme", "--minutes", "10081"], "--minutes 10081: more than 0 and at most 10080 (a week)"),
    (["open", "vnd-acme", "--reason", " "], "--reason: the change ticket or the work the window is for"),
], ids=["not-a-vendor", "no-person", "expired-vendor", "nan", "zero", "over-a-week", "no-reason"])
def test_a_maintenance_window_that_is_no_window_is_refused_before_the_siem_is_asked(args: list[str], said: str, monkeypatch,
                                                                                  capsys) -> None:
    """C-DET-08: the reference lab's people (people.yml); DOCKER_HOST names no engine, so a
    refusal that came after asking the siem would say so instead."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/pacslab-no-engine.sock")
    defaults = {"--minutes": "60", "--reason": "CHG-1 CT firmware"}
    extra = [a for k, v in defaults.items() if k not in args for a in (k, v)]
    code = cli.main(["maintenance", *args, *extra])
    assert (code, capsys.readouterr().err.strip()) == (cli.EXIT_USAGE, f"pacslab: {said}")


def test_the_cli_and_the_siem_bound_a_maintenance_window_alike() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pacslab_siem", REPO_ROOT / "roles" / "siem" / "files" / "pacslab_siem.py")
    assert spec and spec.loader
    siem = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(siem)
    assert cli.MAX_MAINTENANCE_MINUTES == siem.MAX_MAINTENANCE_MINUTES == 10080


def test_up_without_a_reachable_engine_says_so_and_changes_nothing(tmp_path) -> None:
    sock = tmp_path / "no-engine.sock"
    proc = run("up", env={"DOCKER_HOST": f"unix://{sock}"})
    assert proc.returncode == cli.EXIT_MACHINE
    assert f"no engine answers at unix://{sock}" in proc.stderr
    assert "fix: start the engine at DOCKER_HOST" in proc.stderr
    assert not sock.exists()


def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for code in (cli.EXIT_OK, cli.EXIT_PHASE_FAILED, cli.EXIT_USAGE, cli.EXIT_BAD_LAB, cli.EXIT_MACHINE, cli.EXIT_CHECKS_FAILED, cli.EXIT_BUSY):
        assert f"| {code} |" in readme, f"exit code {code} missing from README"


UP_DONE = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def container(status: str, started: str) -> dict:
    return {"State": {"Status": status, "StartedAt": started}}


@pytest.mark.parametrize(
    ("live", "converged", "state"),
    [
        (container("running", "2026-11-23T16:59:59.900000000Z"), UP_DONE, "running"),
        # dockerd came back (or `docker restart`): the container lost the route `up` gave it
        (container("running", "2026-11-23T17:04:55.758500712Z"), UP_DONE, "restarted"),
        (container("running", "2026-11-23T16:59:59Z"), None, "unconverged"),
        (container("exited", "2026-11-23T16:59:59Z"), UP_DONE, "exited"),
        (None, UP_DONE, "absent"),
    ],
)
def test_a_container_started_after_the_last_up_is_not_taken_as_up(live, converged, state) -> None:
    assert cli.container_state(live, converged) == state
    assert cli.hosts_up([{"state": state}]) is (state == "running")


def test_only_a_successful_up_dates_the_converged_lab(tmp_path) -> None:
    record_up(tmp_path, RunResult(rc=2), 3.0)
    assert last_converged(tmp_path) is None
    record_up(tmp_path, RunResult(rc=0), 3.0)
    finished = last_converged(tmp_path)
    assert finished is not None and finished.tzinfo is not None
    assert last_converged(tmp_path / "nowhere") is None


@pytest.mark.parametrize(("flags", "selection"), [([], ["-m", "not lifecycle"]), (["--lifecycle"], [])], ids=["steady", "lifecycle"])
def test_verify_runs_the_steady_checks_unless_asked_for_the_lifecycle_ones(flags, selection, monkeypatch, tmp_path) -> None:
    """`pacslab verify` leaves the lab as it found it; `--lifecycle` adds the checks that take it down."""
    seen: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        seen.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli, "_require_engine", lambda may_install: None)
    monkeypatch.setattr(cli, "state_dir", lambda lab: tmp_path)
    monkeypatch.setattr(cli, "LOCK_DIR", tmp_path)  # not the machine's lock: a real verify may hold it
    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    monkeypatch.setattr("pacslab.report.write_report", lambda lab, results, out: (out / "report.html", out / "report.json"))
    recorded: list[dict] = []
    monkeypatch.setattr("pacslab.report.record_verify", lambda out, started, finished, **kw: recorded.append(kw))
    assert cli.main(["verify", *flags]) == cli.EXIT_OK
    assert recorded == [{"lifecycle": flags == ["--lifecycle"], "pytest_exit": 0}]
    [cmd] = seen
    assert cmd[2:4] == ["pytest", str(REPO_ROOT / "tests" / "integration")]
    assert cmd[4 : 4 + len(selection)] == selection and cmd[4 + len(selection)] == "--lab"


# ------------------------------------------------------------------------------------------------
# The default lab, doctor --lab, status --json, the lock, report


def test_the_default_lab_is_this_checkouts_from_any_folder(tmp_path, monkeypatch, capsys) -> None:
    from pacslab import doctor

    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["status"])
    assert args.lab == str(REPO_ROOT / "inventories" / "default")
    monkeypatch.setattr(doctor, "check", lambda: [])
    assert cli.main(["doctor"]) == cli.EXIT_OK
    assert f"lab definition               {REPO_ROOT / 'inventories' / 'default'}: lab 'default'" in capsys.readouterr().out


@pytest.mark.parametrize("machine_ok", [True, False], ids=["machine-ok", "machine-lacks"])
def test_doctor_takes_lab_and_names_what_refuses_it(machine_ok, lab_copy, monkeypatch, capsys) -> None:
    from pacslab import doctor

    finding = doctor.Finding("Docker engine", machine_ok, "answers" if machine_ok else "no engine", "start it")
    monkeypatch.setattr(doctor, "check", lambda: [finding])
    mutate(lab_copy, lambda h, lv, f: host(h, "pacs").update(lab_zone="basement"))
    code = cli.main(["doctor", "--lab", str(lab_copy)])
    out = capsys.readouterr().out
    assert "REFUSED" in out and "unknown zone 'basement'" in out
    assert code == (cli.EXIT_BAD_LAB if machine_ok else cli.EXIT_MACHINE)  # the machine first, then the definition


def test_status_json_is_a_structure_a_script_can_use(monkeypatch, tmp_path) -> None:
    from pacslab.plan import build_plan
    from pacslab.topology import load_lab

    lab = load_lab(REPO_ROOT / "inventories" / "default")
    monkeypatch.setattr(cli, "state_dir", lambda lab: tmp_path)
    record_up(tmp_path, RunResult(rc=0), 3.0)
    monkeypatch.setattr(cli, "lab_objects", lambda kind, name: [])  # nothing runs
    rows = cli.host_rows(lab)
    fw = next(r for r in rows if r["host"] == "fw")
    assert fw["zone"] is None and fw["addresses"]["datacenter"] == "10.77.40.254" and fw["addresses"]["modality"] == "10.77.30.254"
    pacs = next(r for r in rows if r["host"] == "pacs")
    assert pacs | {"container": "pacslab-pacs"} == {"host": "pacs", "zone": "datacenter", "addresses": {"datacenter": "10.77.40.10"},
                                                    "state": "absent", "container": "pacslab-pacs", "up": False}
    assert next(r for r in rows if r["host"] == "offsite")["up"] is None  # planned
    doc = cli.status_document(lab, build_plan(lab), rows, {"DOCKER-USER": True}, {"pacslab-datacenter"})
    assert doc["up"] is False and doc["last_up"] == last_converged(tmp_path).isoformat()
    assert doc["networks"]["present"] == ["pacslab-datacenter"] and "pacslab-modality" in doc["networks"]["missing"]
    import json

    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only


def test_a_second_changing_run_on_a_lab_is_refused_while_one_holds_it(tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from pacslab.topology import load_lab

    lab = load_lab(REPO_ROOT / "inventories" / "default")
    monkeypatch.setattr(cli, "LOCK_DIR", tmp_path)
    monkeypatch.delenv(cli.LOCK_ENV, raising=False)
    env = {k: v for k, v in os.environ.items() if k != cli.LOCK_ENV}
    with cli.lab_lock(lab, "up"):
        assert "(pacslab up, since" in (tmp_path / "pacslab-default.lock").read_text()
        # what the holder starts (verify's pytest, its `up`) works under the same lock
        with cli.lab_lock(lab, "up"):
            pass
        # another lab has its own lock; leaving it gives the holder's back
        with cli.lab_lock(replace(lab, name="other"), "up"):
            assert os.environ[cli.LOCK_ENV] == str(tmp_path / "pacslab-other.lock")
        assert os.environ[cli.LOCK_ENV] == str(tmp_path / "pacslab-default.lock")
        proc = subprocess.run([sys.executable, "-c", CONTEND, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == cli.EXIT_BUSY, proc.stderr
        assert "lab 'default' is busy: pid" in proc.stderr and "nothing was changed" in proc.stderr
    assert cli.LOCK_ENV not in os.environ
    # released: the next run takes it
    proc = subprocess.run([sys.executable, "-c", CONTEND, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr


# Another process asks for the lock (the lock folder pointed at the test's), as `pacslab down` would.
CONTEND = """
import sys
from pathlib import Path
from pacslab import cli
from pacslab.topology import REPO_ROOT, load_lab
cli.LOCK_DIR = Path(sys.argv[1])
try:
    with cli.lab_lock(load_lab(REPO_ROOT / "inventories" / "default"), "down"):
        pass
except cli.Refused as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.code)
"""


def test_report_without_results_says_so_and_fails(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "state_dir", lambda lab: tmp_path)
    assert cli.main(["report"]) == cli.EXIT_PHASE_FAILED
    assert "has no verify results" in capsys.readouterr().err
    assert not (tmp_path / "verify" / "report.html").exists()


def test_up_with_a_broken_engine_host_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    """PACSLAB_ENGINE_HOST that is not a JSON object of ansible_* variables: exit 2 and the reason,
    no playbook started."""
    monkeypatch.setattr(cli, "LOCK_DIR", tmp_path)
    monkeypatch.delenv(cli.LOCK_ENV, raising=False)
    monkeypatch.setenv("PACSLAB_ENGINE_HOST", '{"docker_host": "tcp://d2"}')
    monkeypatch.setattr(cli, "run_playbook", lambda *a, **k: pytest.fail("a playbook ran"))
    assert cli.main(["up"]) == cli.EXIT_USAGE
    assert "PACSLAB_ENGINE_HOST: docker_host: only ansible_* variables" in capsys.readouterr().err
