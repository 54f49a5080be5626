"""pacslab.fingerprint: what a scenario's reset reports as still different, in words; how long it waits for the lab to settle."""

from __future__ import annotations

from pacslab.fingerprint import differences, settle_timeout
from pacslab.topology import REPO_ROOT, load_lab

# Converge records as roles/lab_converged writes them: "<shared digest>/<host inputs>:<CA root>:<trusts> <observed digest>".
PACS = "3074031ce215f875/44136fa355b3678a:a1e40ee45e27d0a5:pacs=7429f03f78f74a75,vna=ab8b34a5763589bd, e232ff06e5f33bb8"
VNA = "3074031ce215f875/-:a1e40ee45e27d0a5:pacs=7429f03f78f74a75,vna=ab8b34a5763589bd, 0b1c2d3e4f506172"


def test_equal_fingerprints_have_no_differences() -> None:
    assert differences({"converged": {"pacs": PACS}}, {"converged": {"pacs": PACS}}) == []


def test_a_node_changed_by_hand_is_named() -> None:
    after = {"pacs": PACS.replace("e232ff06e5f33bb8", "ffffffffffffffff"), "vna": VNA}
    assert differences({"converged": {"pacs": PACS, "vna": VNA}}, {"converged": after}) == ["converged: pacs differ"]


def test_nodes_configured_from_an_edited_checkout_are_named_as_such_apart_from_the_others() -> None:
    """A changed shared digest (the roles, playbooks or lab folder edited during the run) is no
    state a reset can put back: the line says so and names the way out."""
    after = {"pacs": PACS.replace("3074031ce215f875", "9999999999999999"), "vna": VNA.replace("0b1c2d3e4f506172", "0000000000000000")}
    assert differences({"converged": {"pacs": PACS, "vna": VNA}}, {"converged": after}) == [
        "converged: pacs now configured from a changed checkout or lab definition (the roles, playbooks or lab folder were edited "
        "since the fingerprint): no scenario reset puts that back; `pacslab reset` closes the run",
        "converged: vna differ"]


def test_a_node_without_a_record_on_one_side_differs() -> None:
    assert differences({"converged": {"pacs": PACS}}, {"converged": {"pacs": PACS, "vna": VNA}}) == ["converged: vna differ"]


def test_orthanc_instances_added_are_counted_and_named() -> None:
    before = {"orthanc:pacs": {"instances": ["a"], "files": {"x": "1"}}}
    after = {"orthanc:pacs": {"instances": ["a", "b", "c", "d", "e"], "files": {"x": "2"}}}
    assert differences(before, after) == ["orthanc:pacs: 4 instances added (b, c, d, ...)", "orthanc:pacs: 1 files changed (x)"]


def test_settle_waits_beyond_twice_the_longest_stable_age_of_the_lab() -> None:
    """A study is forwarded once stable on the PACS and must be stable on the VNA too: the reference
    lab (Orthanc's StableAge of 5 s) waits 60 s; a lab whose VNA waits 40 s for stability, 130 s."""
    lab = load_lab(REPO_ROOT / "inventories" / "default")
    assert settle_timeout(lab) == 60.0
    lab.host_vars.setdefault("vna", {})["orthanc_stable_age"] = 40
    assert settle_timeout(lab) == 130.0
    lab.host_vars["vna"]["orthanc_stable_age"] = "{{ site_stable_age }}"  # resolved by Ansible only: the role's default counts
    assert settle_timeout(lab) == 60.0
