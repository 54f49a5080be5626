"""pytest plugin: the ``control`` marker, saved evidence, and a results file for the report.

``@pytest.mark.control("C-ACC-04")`` ties a test to a catalogue control (controls.yml). The
``evidence`` fixture keeps what a test observed (probe outcomes, log lines, rule text); it goes into
the report next to the verdict; files it names (a screenshot) are saved in ``evidence_dir``.
``--pacslab-results=FILE`` writes one JSON record per test.

No secret of the lab (``.pacslab/<lab>/secrets/``) leaves a test through its report: each value is
replaced by ``[redacted secret]`` (pacslab.redact) in the test report before the terminal or
``--junitxml`` sees it (a failure that holds one is kept as its redacted text), in the results file
as it is written, and in the JUnit file once more at the end. The failure itself is still reported,
with its test id and the rest of its message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .redact import redact, redact_tree, secret_values

_RECORDS = pytest.StashKey[list[dict[str, Any]]]()
_EVIDENCE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pacslab")
    group.addoption("--lab", default="inventories/default", help="lab definition folder for integration tests")
    group.addoption("--pacslab-results", default=None, help="write per-test results with control ids (JSON)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "control(id): the catalogue control (controls.yml) this test proves")
    config.addinivalue_line("markers", "lifecycle(place=None): tears the lab down and brings it back; runs after the steady "
                            "checks, or with place 'first' before them and 'last' after every other check")
    config.stash[_RECORDS] = []


LIFECYCLE_PLACES = {"first": 0, None: 2, "last": 3}  # steady checks: 1


def _place(item: pytest.Item) -> int:
    marker = item.get_closest_marker("lifecycle")
    if marker is None:
        return 1
    place = marker.args[0] if marker.args else marker.kwargs.get("place")
    if place not in LIFECYCLE_PLACES:
        raise pytest.UsageError(f"{item.nodeid}: lifecycle place {place!r}: 'first', 'last' or none")
    return LIFECYCLE_PLACES[place]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lifecycle tests take the lab down and up again: they run after the steady checks, which
    observe the lab and change nothing. ``lifecycle("first")`` runs before them: the cold `up` a
    lifecycle run starts with is the one every later check uses (on a fresh machine, the suite's
    only one); ``lifecycle("last")`` runs after every other test (it leaves the lab down). The
    sort is stable: within a place, tests keep their file order."""
    items.sort(key=_place)


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict the test fills with what it observed; saved with its result."""
    store: dict[str, Any] = {}
    request.node.stash[_EVIDENCE] = store
    return store


@pytest.fixture
def evidence_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a test saves evidence files (a screenshot): ``evidence/`` beside the results file, or,
    without one, a temporary folder. A test names such a file in its evidence by its path relative
    to the results file's folder (``evidence/<name>``); the report embeds a ``screenshot``."""
    results = request.config.getoption("--pacslab-results")
    folder = Path(results).parent / "evidence" if results else tmp_path_factory.getbasetemp() / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _record(item: pytest.Item, outcome: str, seconds: float, message: str) -> dict[str, Any]:
    marker = item.get_closest_marker("control")
    return {
        "nodeid": item.nodeid,
        "control": marker.args[0] if marker and marker.args else None,
        "outcome": outcome,
        "seconds": round(seconds, 3),
        "evidence": item.stash.get(_EVIDENCE, {}),
        "message": message[:2000],
    }


def _message(report: pytest.TestReport) -> str:
    """Why a test did not pass: the crash line of a failure or error, the reason of a skip."""
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return f"xfail: {report.wasxfail}"
        return str(report.longrepr[2]).removeprefix("Skipped: ") if isinstance(report.longrepr, tuple) else ""
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(crash.message) if report.failed and crash else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """One record per test: its call's outcome, or its setup's when setup did not pass (a failed
    setup is an "error"); a failed teardown adds an "error" record, so it is never hidden."""
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed") or (report.when == "teardown" and report.failed):
        outcome = "error" if report.when != "call" and report.failed else report.outcome
        item.config.stash[_RECORDS].append(_record(item, outcome, report.duration, _message(report)))
    return report


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Tests collected but left out of this run (-k, -m): the report shows them as not run."""
    for item in items:
        item.config.stash[_RECORDS].append(_record(item, "deselected", 0.0, "deselected in this run (-k/-m)"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--pacslab-results")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(redact(json.dumps(session.config.stash[_RECORDS], indent=1, default=str)))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last pass over the JUnit file (written at session finish): whatever reached it by another
    path than a test report (suite properties, a crash in a hook) is redacted there too."""
    xmlpath = getattr(config.option, "xmlpath", None)
    if xmlpath and Path(xmlpath).is_file():
        text = Path(xmlpath).read_text()
        clean = redact(text)
        if clean != text:
            Path(xmlpath).write_text(clean)


def _redact_report(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Rewrite, in place, every part of ``report`` that holds a secret: the failure (``longrepr``,
    then kept as its redacted text; a skip keeps its (file, line, reason) shape), captured output
    sections and, for test reports, user properties. A failure that holds none keeps pytest's own
    structured form."""
    secrets = secret_values()
    if isinstance(report.longrepr, tuple):
        report.longrepr = redact_tree(report.longrepr, secrets)
    elif report.longrepr is not None:
        text = str(report.longrepr)
        clean = redact(text, secrets)  # also a secret's piece that pytest cut at an ellipsis
        if clean != text:
            report.longrepr = clean
    report.sections = [(title, redact(content, secrets)) for title, content in report.sections]
    if isinstance(report, pytest.TestReport):
        report.user_properties = [(name, redact_tree(value, secrets)) for name, value in report.user_properties]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Before any other plugin logs the report (terminal, junitxml, xdist): the record of this
    test was already taken, with its one-line message, in pytest_runtest_makereport."""
    _redact_report(report)


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A collection error is logged (terminal, JUnit) like a failure: the same redaction."""
    _redact_report(report)
