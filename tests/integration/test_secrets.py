"""No secret of the lab reaches an exception, a report or a JUnit file (issue 9, item 7).

A platform check (no catalogue control): the lab's generated credentials (``.pacslab/<lab>/secrets/``)
must not leak through the lab's own proof. A small pytest session plants failures that carry a real
secret the old way (a failing curl with ``-u user:password`` whose whole argv goes into the
exception, the password in captured output, in evidence, in an assertion); the report built from it
must hold none of the lab's secrets, and must still report each failure, with its test id and the
redaction marker where the secret was. SP 800-53 IA-5(7), CSF PR.DS-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pacslab.probes import imaging as im
from pacslab.redact import REDACTED
from pacslab.report import write_report
from pacslab.topology import REPO_ROOT, Lab

PLANTED = '''
import os
from pathlib import Path

import pytest

from pacslab.probes import imaging as im
from pacslab.topology import load_lab

HOST = os.environ["PLANT_HOST"]
RAW = Path(os.environ["PLANT_RAW"])  # the unredacted texts, so the outer test knows a secret was there


@pytest.fixture
def lab(request):
    return load_lab(request.config.getoption("--lab"))


@pytest.mark.control("C-DAT-02")
def test_old_exec_in_puts_the_password_into_its_exception(lab, evidence):
    argv = ["curl", "-sf", "--max-time", "10", "--cacert", "/etc/pacslab/tls/root.pem", "--resolve", f"{HOST}:443:127.0.0.1",
            "-u", f"{im.ADMIN}:{im.admin_password(lab, HOST)}", f"https://{HOST}/pacslab-no-such-route"]
    # The message the old exec_in built for such a command, made without running it: the
    # password never reaches a real command line, only the texts the reporters must redact.
    evidence["argv"] = argv
    print("ran:", " ".join(argv))  # as the old exec_in logged it
    message = f"{HOST}: {' '.join(argv)} failed (22): "  # curl -sf: silent
    RAW.write_text(message)
    raise RuntimeError(message)


def test_assertion_shows_the_password(lab):
    password = im.admin_password(lab, HOST)
    assert not password, f"planted: {password}"
'''


@pytest.fixture(scope="module")
def secrets_of(running_lab: Lab, state: Path) -> tuple[str, list[str]]:
    """An Orthanc host of this lab that has a generated REST password, and every secret value of
    the lab (one per file of its secrets folder, as Ansible's password lookup writes them)."""
    files = sorted((state / "secrets").glob("*"))
    hosts = [f.name.removeprefix("orthanc-") for f in files if f.name.removeprefix("orthanc-") in running_lab.hosts]
    assert hosts, f"no orthanc-<host> secret in {state / 'secrets'}: has `pacslab up` run?"
    return hosts[0], [f.read_text().split()[0] for f in files]


def test_exec_in_names_program_and_exit_code_not_argv(running_lab: Lab, secrets_of: tuple[str, list[str]]) -> None:
    """A failing command whose argv and stderr carry the password: the exception names the host,
    the program and its exit code, and shows stderr with the secret redacted."""
    host, _ = secrets_of
    password = im.admin_password(running_lab, host)
    with pytest.raises(RuntimeError) as failure:
        im.exec_in(running_lab, host, "sh", "-c", 'echo "refused for $(cat)" >&2; exit 7', input=password)
    assert password not in str(failure.value), "exec_in's message holds the password"
    assert str(failure.value) == f"{host}: sh exited 7: refused for {REDACTED}"


def test_orthanc_rest_passes_credentials_on_stdin(running_lab: Lab, secrets_of: tuple[str, list[str]]) -> None:
    """Positive twin of the argv rule: the probe still authenticates (curl -K - on stdin), and the
    same request without the credentials is refused with 401."""
    host, _ = secrets_of
    assert im.orthanc(running_lab, host, "/system").get("Name"), "Orthanc answered /system without its Name"
    status, _ = im.orthanc_call(running_lab, host, "/system", authenticated=False)
    assert status == 401


def test_planted_failures_reach_no_report_with_a_secret(running_lab: Lab, secrets_of: tuple[str, list[str]], tmp_path: Path) -> None:
    host, secrets = secrets_of
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_planted.py").write_text(PLANTED)
    raw, results, junit = tmp_path / "raw.txt", tmp_path / "results.json", tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pacslab.pytest_plugin", "-c", str(tmp_path / "pytest.ini"), "-o", "junit_logging=all",
         "--lab", str(running_lab.path), f"--pacslab-results={results}", f"--junitxml={junit}", "test_planted.py"],
        cwd=tmp_path, env={**os.environ, "PLANT_HOST": host, "PLANT_RAW": str(raw), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )
    html, report_json = write_report(running_lab, results, tmp_path / "report")
    password = im.admin_password(running_lab, host)
    assert password in raw.read_text(), "the planted exception did not carry the password: the check would prove nothing"

    outputs = {"results.json": results.read_text(), "junit.xml": junit.read_text(), "report.html": html.read_text(),
               "report.json": report_json.read_text(), "pytest's terminal output": proc.stdout + proc.stderr}
    for name, text in outputs.items():
        leaked = [i for i, s in enumerate(secrets) if s in text]
        assert not leaked, f"{name} holds secret(s) number {leaked} of {running_lab.name}'s secrets folder"

    # The failures are still reported, each with its id and the marker where the secret was.
    assert proc.returncode == 1, f"inner pytest exited {proc.returncode}, not 1 (tests failed)"
    records = {r["nodeid"]: r for r in json.loads(outputs["results.json"])}
    old = records["test_planted.py::test_old_exec_in_puts_the_password_into_its_exception"]
    assert (old["outcome"], old["control"]) == ("failed", "C-DAT-02")
    assert old["message"].rstrip() == (
        f"RuntimeError: {host}: curl -sf --max-time 10 --cacert /etc/pacslab/tls/root.pem --resolve {host}:443:127.0.0.1 "
        f"-u pacslab-admin:{REDACTED} https://{host}/pacslab-no-such-route failed (22): "
    ).rstrip()
    assert old["evidence"]["argv"][9] == f"pacslab-admin:{REDACTED}"
    asserted = records["test_planted.py::test_assertion_shows_the_password"]
    assert asserted["outcome"] == "failed"
    assert asserted["message"].startswith(f"AssertionError: planted: {REDACTED}")
    for name in ("junit.xml", "report.html", "pytest's terminal output"):
        assert "test_old_exec_in_puts_the_password_into_its_exception" in outputs[name], f"{name} lost the failing test"
        assert REDACTED in outputs[name], f"{name} has no redaction marker"
    assert "ran: curl" in outputs["junit.xml"], "junit.xml lost the captured output (junit_logging=all)"
    report = json.loads(outputs["report.json"])
    assert report["controls"]["C-DAT-02"]["verdict"] == "failed"
    assert [f["test"] for f in report["platform_failures"]] == ["test_planted.py::test_assertion_shows_the_password"]
