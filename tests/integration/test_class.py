"""A class of student labs (issue 11): `pacslab class up --count 1` brings up a lab derived from the
running one beside it; neither reaches the other (each SYN dropped by the sender's own fw and logged
as egress); a scenario runs in the student lab as in the reference; its memory is measured;
`pacslab class down` removes exactly the student lab's containers, networks and volumes."""

from __future__ import annotations

import json

import pytest

from pacslab import classroom, cli
from pacslab import scenario as sc
from pacslab.docker import lab_objects
from pacslab.firewall import PREFIX_EGRESS
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Lab

pytestmark = pytest.mark.lifecycle

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 4); print("open")
except TimeoutError: print("dropped")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error", e)
"""


@pytest.fixture(scope="module")
def student(running_lab: Lab):
    """The student lab, up; taken down at the end of the module if the last test did not."""
    assert cli.main(["class", "up", "--count", "1", "--lab", str(running_lab.path)]) == 0
    [member] = classroom.members(running_lab)
    yield member
    if classroom.members(running_lab):
        cli.main(["class", "down", "--lab", str(running_lab.path)])


def _attempt(src_lab: Lab, dst_lab: Lab) -> tuple[str, list[dict]]:
    """From src_lab's first modality to dst_lab's PACS DICOM port: the outcome, and src_lab's fw log
    lines for it."""
    src, dst = src_lab.hosts["mod-ct"], dst_lab.hosts["pacs"]
    offset = standins.drop_log_size(src_lab)
    outcome = im.exec_in(src_lab, src.name, "python3", "-c", CONNECT, str(dst.address), str(dst.dicom_port)).strip()
    lines = im.wait_for("the egress line", lambda: [e for e in seg.parse_drop_log(standins.read_drop_log(src_lab, offset))
                                                     if e.get("dest_ip") == str(dst.address)] or None, timeout=15, every=1)
    return outcome, lines


@pytest.mark.parametrize("direction", ["student-to-reference", "reference-to-student"])
def test_one_lab_cannot_reach_another(running_lab: Lab, student: Lab, direction: str, evidence) -> None:
    src_lab, dst_lab = (student, running_lab) if direction == "student-to-reference" else (running_lab, student)
    outcome, lines = _attempt(src_lab, dst_lab)
    evidence.update(src=f"{src_lab.name}/mod-ct", dst=f"{dst_lab.name}/pacs {dst_lab.hosts['pacs'].address}", outcome=outcome,
                    prefixes=sorted({e.get("oob.prefix") for e in lines}))
    assert outcome == "dropped"
    assert {e.get("oob.prefix") for e in lines} == {PREFIX_EGRESS}
    assert {e.get("src_ip") for e in lines} == {str(src_lab.hosts["mod-ct"].address)}


def test_a_scenario_runs_in_the_student_lab(student: Lab, evidence) -> None:
    scenario = sc.find(student, "W3")
    record = sc.run_scenario(student, scenario, "defended")
    reset = sc.reset_scenario(student, scenario)
    evidence.update(steps={s["id"]: s["as_expected"] for s in record["steps"]})
    assert record["as_expected"] and reset["equal"], (record, reset)


def test_class_status_measures_each_student_lab(running_lab: Lab, student: Lab, capsys, evidence) -> None:
    rc = cli.main(["class", "status", "--json", "--lab", str(running_lab.path)])
    [row] = json.loads(capsys.readouterr().out)
    evidence.update(memory_mib=row["memory_mib"])
    assert rc == 0 and row["lab"] == student.name and row["up"] and row["memory_mib"] > 100


def test_class_down_removes_exactly_the_student_lab(running_lab: Lab, student: Lab, evidence) -> None:
    """Last in the module: the student's containers, networks and volumes are gone, the reference
    lab's are the same objects as before."""
    kinds = ("container", "network", "volume")
    reference = {k: sorted(o["Id"] if "Id" in o else o["Name"] for o in lab_objects(k, running_lab.name)) for k in kinds}
    assert all(lab_objects(k, student.name) for k in kinds)
    assert cli.main(["class", "down", "--lab", str(running_lab.path)]) == 0
    left = {k: lab_objects(k, student.name) for k in kinds}
    evidence.update(left={k: len(v) for k, v in left.items()})
    assert left == {"container": [], "network": [], "volume": []}
    assert {k: sorted(o["Id"] if "Id" in o else o["Name"] for o in lab_objects(k, running_lab.name)) for k in kinds} == reference
    assert classroom.members(running_lab) == []
