"""Integration fixtures: a running lab (brought up if it is down) and the segmentation run."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pacslab import cli, response
from pacslab.docker import docker, engine_version
from pacslab.plan import Plan, build_plan, state_dir
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Lab, load_lab

LOG_DEADLINE = 10.0  # seconds within which every denied attempt must be in the fw's NFLOG log


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Lab:
    return load_lab(pytestconfig.getoption("--lab"))


@pytest.fixture(scope="session")
def plan(lab: Lab) -> Plan:
    return build_plan(lab)


@pytest.fixture(scope="session")
def state(lab: Lab) -> Path:
    return state_dir(lab)


@pytest.fixture(scope="session", autouse=True)
def lab_held(lab: Lab) -> Iterator[None]:
    """The session holds the lab's lock (pacslab.cli.lab_lock) when pytest runs on its own; under
    `pacslab verify` it already does. Another up, down or verify of the lab is refused meanwhile."""
    with cli.lab_lock(lab, "integration tests"):
        yield


@pytest.fixture(autouse=True)
def _standins_gone_before_lifecycle(request: pytest.FixtureRequest, lab: Lab) -> None:
    """The lifecycle checks (after the steady ones) take the lab down and up: the segmentation run's stand-ins
    (session scope, about 20 containers, removed again harmlessly when the session ends) go first,
    or every down and up of those checks would handle them too (a down took 36 s instead of 15)."""
    if request.node.get_closest_marker("lifecycle"):
        standins.remove(lab)


@pytest.fixture(scope="session")
def running_lab(lab: Lab) -> Lab:
    """The suite brings the lab up when it is down (docs/architecture.md section 8), or when a container
    started after the last successful `up` (an engine restart): such a container fails closed."""
    if engine_version() is None or not cli.lab_is_up(lab):
        rc = cli.main(["up", "--lab", str(lab.path)])
        assert rc == cli.EXIT_OK, f"pacslab up failed with exit code {rc}"
    assert cli.lab_is_up(lab)
    return lab


@pytest.fixture(scope="session")
def own_devices(running_lab: Lab) -> Iterator[Callable[[str, list[str]], None]]:
    """``own_devices(what, addresses)`` opens, before a check starts devices of its own at addresses no
    host of the lab has (the segmentation stand-ins, the host isolation probes), a window of
    authorised activity for those addresses alone that lasts until the session ends
    (pacslab.response.authorised). The siem raises unknown-device for such a device, which
    quarantines its address; a window for the devices' life alone is not enough, since a sweep of
    the scanner that saw them can be recorded after they are gone (a rehearsal left two probe
    addresses quarantined, and every later containment check failed on it)."""
    with contextlib.ExitStack() as windows:
        def authorise(what: str, addresses: list[str]) -> None:
            assert addresses, f"{what}: no address (an empty list would authorise every address for the session)"
            windows.enter_context(response.authorised(running_lab, f"{what} (tests/integration)", addresses, minutes=240,
                                                      by="pacslab-tests"))

        yield authorise


@dataclass
class SegmentationRun:
    cases: list[seg.Case]
    outcomes: dict[str, str]
    log: list[dict[str, object]]
    probe_seconds: float
    counted: dict[str, int]  # flow id -> packets its named counter gained during the probe run


def flow_counters(lab: Lab) -> dict[str, int]:
    """Packets per flow from the fw's named counters (flow_<id>)."""
    listing = docker("exec", lab.container_name(lab.router.name), "nft", "-j", "list", "counters", "table", "inet", "pacslab").stdout
    counters = (o["counter"] for o in json.loads(listing)["nftables"] if "counter" in o)
    return {c["name"].removeprefix("flow_"): int(c["packets"]) for c in counters if c["name"].startswith("flow_")}


@pytest.fixture(scope="session")
def segmentation(running_lab: Lab, plan: Plan, state: Path, own_devices: Callable[[str, list[str]], None]) -> Iterator[SegmentationRun]:
    """Stand-ins up, every case probed once from its source, the fw's drop log collected. The probes
    are a scan from the hosts' own addresses: the siem raises port-scan alerts for them, and the run
    is a window of authorised activity, so that it quarantines nobody (pacslab.response.authorised)."""
    lab = running_lab
    cases = seg.build_cases(lab)
    own_devices("the segmentation check's stand-ins", sorted({n.ipv4_address for c in standins.standin_plans(lab, plan, cases) for n in c.networks}))
    started = standins.start(lab, plan, cases, state)
    try:
        assert started.ok, f"stand-ins failed: {started.failures}"
        standins.wait_listening(lab, plan, cases)
        offset = standins.drop_log_mark(lab)
        before = flow_counters(lab)
        with response.authorised(lab, "the segmentation check's probes (tests/integration)", sorted({c.src.address for c in cases}),
                                 by="pacslab-tests"):
            t0 = time.monotonic()
            outcomes = standins.run_cases(lab, cases)
            probe_seconds = time.monotonic() - t0
        after = flow_counters(lab)
        counted = {f: after.get(f, 0) - before.get(f, 0) for f in after}
        denied = [c for c in cases if c.kind != "allow"]
        deadline = time.monotonic() + LOG_DEADLINE
        while True:
            entries = seg.parse_drop_log(standins.read_drop_log(lab, offset))
            if all(seg.logged(c, entries) for c in denied) or time.monotonic() > deadline:
                break
            time.sleep(1)
        yield SegmentationRun(cases, outcomes, entries, probe_seconds, counted)
    finally:
        standins.remove(lab)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """allow_case / deny_case / egress_case / flow: one test per case of the lab's matrix."""
    wanted = {"allow_case": "allow", "deny_case": "deny", "egress_case": "egress"}
    names = [n for n in wanted if n in metafunc.fixturenames]
    if not names and "flow" not in metafunc.fixturenames:
        return
    lab = load_lab(metafunc.config.getoption("--lab"))
    if "flow" in metafunc.fixturenames:
        metafunc.parametrize("flow", lab.flows, ids=[f.id for f in lab.flows])
    for name in names:
        cases = [c for c in seg.build_cases(lab) if c.kind == wanted[name]]
        metafunc.parametrize(name, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def fw_exec(running_lab: Lab) -> Callable[..., str]:
    """Run a command in the fw container; its stdout."""

    def run(*args: str) -> str:
        return docker("exec", running_lab.container_name(running_lab.router.name), *args).stdout

    return run
