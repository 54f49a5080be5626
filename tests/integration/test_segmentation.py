"""C-ACC-04 zone segmentation (CSF PR.AC-5, PR.PT-4): seen from the source's side, then the fw's log.

Every allowed flow connects and reaches the intended listener (its banner names it); every case of
the generated deny matrix gets no answer (dropped, not refused: a refusal would mean the fw let
the SYN through) and appears in the fw's NFLOG JSON log with source, destination and port.
"""

from __future__ import annotations

import pytest

from pacslab.probes import segmentation as seg

pytestmark = pytest.mark.control("C-ACC-04")


def test_allowed_flow_connects(allow_case: seg.Case, segmentation, running_lab, evidence) -> None:
    """A planned destination is a stand-in that names itself. A deployed one is the real service:
    it answers (no banner) or, where its service comes later (pacs:22 before the bastion issue),
    refuses; either way the SYN crossed the fw, which only ever drops."""
    outcome = segmentation.outcomes[allow_case.id]
    dst = f"{allow_case.dst.address}:{allow_case.port}/{allow_case.proto}"
    evidence.update(flow=allow_case.flow, src=allow_case.src.address, dst=dst, outcome=outcome)
    host = running_lab.hosts.get(allow_case.dst.name)
    if host is not None and host.deployed:
        assert outcome in ("open:?", "refused"), f"{allow_case.id}: the fw must forward to {allow_case.dst.name}, got {outcome}"
    else:
        assert outcome == f"open:{allow_case.dst.name}", f"{allow_case.id}: expected the {allow_case.dst.name} listener, got {outcome}"


def test_denied_flow_is_dropped_and_logged(deny_case: seg.Case, segmentation, evidence) -> None:
    outcome = segmentation.outcomes[deny_case.id]
    entry = seg.logged(deny_case, segmentation.log)
    evidence.update(outcome=outcome, nflog={k: entry[k] for k in ("timestamp", "oob.prefix", "src_ip", "dest_ip", "dest_port")} if entry else None)
    assert outcome == "dropped", f"{deny_case.id} must be dropped by the fw, got {outcome}"
    assert entry is not None, f"{deny_case.id}: no NFLOG entry {deny_case.src.address} -> {deny_case.dst.address}:{deny_case.port} within 10 s"


def test_nothing_leaves_the_lab(egress_case: seg.Case, segmentation, evidence) -> None:
    """An address of the lab's space that no zone holds stands for 'outside': never an outside address."""
    outcome = segmentation.outcomes[egress_case.id]
    entry = seg.logged(egress_case, segmentation.log)
    evidence.update(outcome=outcome, target=egress_case.dst.address, nflog=entry and entry.get("oob.prefix"))
    assert outcome == "dropped", f"{egress_case.id}: got {outcome}"
    assert entry is not None, f"{egress_case.id}: the fw did not log the egress drop"


def test_each_flow_counter_counts_its_probes(flow, segmentation, evidence) -> None:
    """Per-flow named counters: during the probe run, each flow's counter gained the packets of
    its allowed probes (and only the fw's rule for that flow can increment it)."""
    gained = segmentation.counted.get(flow.id)
    evidence.update(packets_during_probe_run=gained)
    assert gained is not None, f"the fw has no counter flow_{flow.id}"
    assert gained > 0, f"flow {flow.id}: its allowed probes never hit its rule"
