"""The rendered ruleset: default drop, one accept per flow with its own counter, drops logged.

The expected accept rules are written out by hand for representative flows of the reference lab
(a host flow with several sources, a zone source, an any-port flow, a UDP flow); for breadth, every
accept rule is parsed back and compared with the flow list read here (addresses, ports, counter),
never with ``flow_rules()``, the renderer's own helper. ``test_mutations_are_caught`` breaks
``flow_rules()`` in several ways and shows that each is caught.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pacslab import firewall
from pacslab.firewall import LOG_GROUP, PREFIX_DENY, PREFIX_EGRESS, counter_name, render
from pacslab.topology import Flow, Lab, LabDefinitionError, load_lab

from .conftest import DEFAULT_LAB, mutate

LAB = load_lab(DEFAULT_LAB)
RULES = render(LAB)

# The accept rules of four flows, exactly as nft must read them (reference lab addresses typed in).
EXPECTED_RULES = {
    "F01": 'ip saddr { 10.77.30.10, 10.77.30.11, 10.77.31.20 } ip daddr 10.77.40.10 tcp dport 2762 ct state new '
           'counter name "flow_F01" accept comment "F01 DICOM C-ECHO/C-STORE over TLS from modalities and the legacy overlay gateway"',
    "F03": 'ip saddr 10.77.20.0/24 ip daddr 10.77.40.12 tcp dport 2575 ct state new '
           'counter name "flow_F03" accept comment "F03 HL7 v2 orders over MLLP wrapped in TLS"',
    "F12": 'ip saddr 10.77.50.12 ip daddr 10.77.40.0/24 ct state new '
           'counter name "flow_F12" accept comment "F12 scheduled vulnerability scans of the datacenter from the security zone only"',
    "F13": 'ip saddr { 10.77.20.0/24, 10.77.30.0/24, 10.77.40.0/24, 10.77.50.0/24, 10.77.60.0/24, 10.77.70.0/24, 10.77.80.0/24 } '
           'ip daddr 10.77.10.13 udp dport 123 ct state new counter name "flow_F13" accept comment "F13 time synchronisation"',
}
ACCEPT_RE = re.compile(
    r'^ip saddr (?P<src>\{ [^}]+ \}|\S+) ip daddr (?P<dst>\S+)(?: (?P<proto>tcp|udp) dport (?P<ports>\{ [^}]+ \}|\d+))? '
    r'ct state new counter name "(?P<counter>[^"]+)" accept comment "(?P<comment>[^"]*)"$'
)


def forward_chain(text: str) -> list[str]:
    body = text.split("chain forward {", 1)[1].split("\n\t}", 1)[0]
    return [ln.strip() for ln in body.splitlines() if ln.strip()]


def _items(expr: str) -> set[str]:
    return {x.strip() for x in expr.strip("{} ").split(",")}


def _address(lab: Lab, kind: str, name: str) -> str:
    return str(lab.zones[name].subnet) if kind == "zone" else str(lab.hosts[name].address)


def fw_flows(lab: Lab) -> list[Flow]:
    """The flows that cross the fw: lab.flows (lab.zone_flows stay inside a zone and never reach it)."""
    return list(lab.flows)


def check_expected_rules(rules: str) -> None:
    chain = forward_chain(rules)
    for fid, rule in EXPECTED_RULES.items():
        assert chain.count(rule) == 1, f"{fid}: the expected rule is in the forward chain {chain.count(rule)} times, not once"


def check_accepts_are_exactly_the_flows(rules: str) -> None:
    """Every accept rule after the established one parses, and matches one flow of the lab:
    sources, destination, protocol, ports and counter; every flow has exactly one such rule."""
    accepts = [r for r in forward_chain(rules) if re.search(r"\baccept\b", r)]
    assert accepts[0] == "ct state established,related accept"
    seen: dict[str, int] = {}
    flows = {counter_name(f): f for f in fw_flows(LAB)}
    for rule in accepts[1:]:
        m = ACCEPT_RE.match(rule)
        assert m, f"accept rule in an unexpected form: {rule}"
        flow = flows.get(m["counter"])
        assert flow is not None, f"accept rule for no flow: {rule}"
        seen[flow.id] = seen.get(flow.id, 0) + 1
        assert _items(m["src"]) == {_address(LAB, s.kind, s.name) for s in flow.sources}, rule
        assert m["dst"] == _address(LAB, flow.dest.kind, flow.dest.name), rule
        if flow.ports is None:
            assert m["proto"] is None and m["ports"] is None, f"{flow.id} allows any port: {rule}"
        else:
            assert m["proto"] == flow.proto, rule
            assert {int(p) for p in _items(m["ports"])} == set(flow.ports), rule
        assert m["comment"].startswith(f"{flow.id} "), rule
    assert seen == {f.id: 1 for f in fw_flows(LAB)}


def check_named_counters(rules: str) -> None:
    for flow in fw_flows(LAB):
        assert f"counter flow_{flow.id} {{" in rules, flow.id
        assert f'counter name "flow_{flow.id}" accept' in rules, flow.id


def test_forward_policy_is_drop_and_ends_with_a_logged_drop() -> None:
    chain = forward_chain(RULES)
    assert chain[0] == "type filter hook forward priority filter; policy drop;"
    assert chain[-1] == f'counter log group {LOG_GROUP} prefix "{PREFIX_DENY}" drop'
    assert chain[-1] == 'counter log group 1 prefix "pacslab deny " drop'


def test_quarantine_comes_before_established_and_flows() -> None:
    chain = forward_chain(RULES)
    first_quarantine = next(i for i, r in enumerate(chain) if "@quarantine" in r)
    established = chain.index("ct state established,related accept")
    first_flow = next(i for i, r in enumerate(chain) if "counter name" in r)
    assert first_quarantine < established < first_flow


def test_egress_outside_the_zones_is_dropped_before_any_flow() -> None:
    chain = forward_chain(RULES)
    egress = next(i for i, r in enumerate(chain) if PREFIX_EGRESS in r)
    assert chain[egress] == 'ip daddr != @lab_nets counter log group 1 prefix "pacslab egress " drop'
    assert egress < next(i for i, r in enumerate(chain) if "counter name" in r)


@pytest.mark.parametrize("flow", list(EXPECTED_RULES))
def test_hand_written_rule_is_rendered(flow: str) -> None:
    assert forward_chain(RULES).count(EXPECTED_RULES[flow]) == 1


def test_accept_rules_are_exactly_the_flows() -> None:
    check_accepts_are_exactly_the_flows(RULES)


def test_every_flow_has_its_named_counter() -> None:
    check_named_counters(RULES)


def test_the_reference_lab_has_twenty_flow_rules() -> None:
    """20 routed flows (F01..F13 with their letters, F16), one rule each: a count typed in, not derived.
    F04 (pacs -> vna) and F14 stay inside their zones: no rule, no counter."""
    assert sum(1 for r in forward_chain(RULES) if 'counter name "flow_' in r) == 20
    assert "flow_F04" not in RULES and "flow_F14" not in RULES


# ---------------------------------------------------------------------------------------------
# Mutations of flow_rules(): render() must produce a ruleset that the checks above refuse.

_real_flow_rules = firewall.flow_rules


def _edit(change: Callable[[Flow, str], list[str]]) -> Callable[[Lab, Flow], list[str]]:
    def mutated(lab: Lab, flow: Flow) -> list[str]:
        return [out for rule in _real_flow_rules(lab, flow) for out in change(flow, rule)]

    return mutated


MUTATIONS: dict[str, Callable[[Lab, Flow], list[str]]] = {
    "no-rules": lambda lab, flow: [],
    "no-port-match": _edit(lambda f, r: [re.sub(r" (tcp|udp) dport (\{ [^}]+ \}|\d+)", "", r)]),
    "first-source-only": _edit(lambda f, r: [re.sub(r"ip saddr \{ ([^,}]+)[^}]*\}", r"ip saddr \1", r)]),
    "source-and-destination-swapped": _edit(
        lambda f, r: [re.sub(r"ip saddr (\{ [^}]+ \}|\S+) ip daddr (\S+)", r"ip saddr \2 ip daddr \1", r)]
    ),
    "udp-as-tcp": _edit(lambda f, r: [r.replace(" udp dport ", " tcp dport ")]),
    "one-shared-counter": _edit(lambda f, r: [re.sub(r'counter name "flow_[^"]+"', 'counter name "flow_F01"', r)]),
    "rule-per-flow-doubled": _edit(lambda f, r: [r, r]),
    "zone-as-its-router": _edit(lambda f, r: [re.sub(r"(\d+\.\d+\.\d+)\.0/24", r"\1.254", r)]),
}
CHECKS: dict[str, Callable[[str], None]] = {
    "hand-written rules": check_expected_rules,
    "accepts are exactly the flows": check_accepts_are_exactly_the_flows,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutations_are_caught(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall, "flow_rules", MUTATIONS[mutation])
    mutated = render(LAB)
    assert mutated != RULES, f"{mutation}: the mutation changed nothing"
    for name, check in CHECKS.items():
        try:
            check(mutated)
        except AssertionError:
            continue
        pytest.fail(f"flow_rules() mutated ({mutation}): the check '{name}' still passes")


def test_the_real_renderer_passes_every_check() -> None:
    for check in CHECKS.values():
        check(RULES)


# The two per-source DICOM limits (C-PRT-05), exactly as the reference lab's forward chain holds them.
DICOM_LIMITS = [
    'ip daddr . tcp dport { 10.77.20.10 . 2762, 10.77.40.10 . 2762, 10.77.40.11 . 2762, 10.77.40.12 . 2762 } ct state new '
    'update @dicom_rate { ip saddr limit rate over 10/second burst 20 packets } counter log group 1 prefix "pacslab ratelimit " drop',
    'ip daddr . tcp dport { 10.77.20.10 . 2762, 10.77.40.10 . 2762, 10.77.40.11 . 2762, 10.77.40.12 . 2762 } ct state new '
    'add @dicom_held { ip saddr ct count over 4 } counter log group 1 prefix "pacslab ratelimit " drop',
]


def test_the_forward_chain_limits_dicom_per_source() -> None:
    chain = forward_chain(RULES)
    assert [ln for ln in chain if "pacslab ratelimit" in ln] == DICOM_LIMITS


def test_without_the_limits_switch_the_chain_has_none(lab_copy: Path) -> None:
    """firewall_dicom_limits: false on the fw (W12's break-and-fix run) needs C-PRT-05 waived; then the
    chain has no rate-limit rule and everything else is as before."""
    (lab_copy / "host_vars" / "fw.yml").write_text("firewall_dicom_limits: false\n")
    with pytest.raises(LabDefinitionError, match=r"host_vars/fw.yml: fw.firewall_dicom_limits: false turns off C-PRT-05 on fw; "
                                                 r"lab_waivers does not waive C-PRT-05"):
        load_lab(lab_copy)
    mutate(lab_copy, lambda h, lv, fl: lv.update(lab_waivers=[{"control": "C-PRT-05", "justification": "workshop W12"}]))
    open_chain = forward_chain(render(load_lab(lab_copy)))
    assert [ln for ln in open_chain if "ratelimit" in ln] == []
    assert open_chain == [ln for ln in forward_chain(RULES) if ln not in DICOM_LIMITS]


# Network monitoring (C-DET-01): the copy of every forwarded packet to the IDS sensor, written out
# by hand for the reference lab (its sensor is 10.77.50.11). nftables 1.0.6 has dup in the ip family
# only, so the copy is a table of its own; its chain hooks forward before the filtering chain.
MIRROR = """table ip pacslab_mirror {
\tchain mirror {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tip saddr != 10.77.50.11 ip daddr != 10.77.50.11 dup to 10.77.50.11
\t}
}"""


def _priority(rules: str, chain: str) -> int:
    """A base chain's priority as a number (nft's named priority filter is 0)."""
    m = re.search(rf"\tchain {chain} {{\n\t\ttype filter hook forward priority filter(?: ([-+]) (\d+))?;", rules)
    assert m, f"no forward base chain {chain}"
    return 0 if m[1] is None else (-1 if m[1] == "-" else 1) * int(m[2])


def test_the_fw_copies_every_forwarded_packet_to_the_sensor_but_its_own() -> None:
    assert RULES.count(MIRROR) == 1
    assert RULES.count("dup to") == 1  # one sensor, one copy


def test_the_copy_is_taken_before_the_forward_chain_filters() -> None:
    """Dropped packets (a scan, a quarantined host's) must reach the sensor too."""
    assert _priority(RULES, "mirror") < _priority(RULES, "forward") == 0


def test_without_a_deployed_sensor_nothing_is_copied(lab_copy: Path) -> None:
    def planned(hosts: dict, lv: dict, fl: dict) -> None:  # type: ignore[type-arg]
        sensor = hosts["all"]["children"]["sensors"]["hosts"]["sensor"]
        sensor.pop("lab_image")
        sensor["lab_state"] = "planned"

    mutate(lab_copy, planned)
    rules = render(load_lab(lab_copy))
    assert "dup" not in rules and "pacslab_mirror" not in rules
    assert forward_chain(rules) == forward_chain(RULES)  # the filtering is the same


def test_each_deployed_sensor_gets_its_copy_and_no_sensor_traffic_is_copied(lab_copy: Path) -> None:
    """A second sensor (another zone): each gets every packet, and neither's own traffic is copied."""
    def second(hosts: dict, lv: dict, fl: dict) -> None:  # type: ignore[type-arg]
        hosts["all"]["children"]["sensors"]["hosts"]["sensor-dc"] = {
            "lab_zone": "datacenter", "lab_address": "10.77.40.99", "lab_image": "sensor", "lab_owner": "it-security",
            "lab_criticality": "medium", "lab_purpose": "a second sensor"}

    mutate(lab_copy, second)
    rules = render(load_lab(lab_copy))
    own = "{ 10.77.50.11, 10.77.40.99 }"
    assert [ln.strip() for ln in rules.splitlines() if "dup to" in ln] == [
        f"ip saddr != {own} ip daddr != {own} dup to 10.77.50.11", f"ip saddr != {own} ip daddr != {own} dup to 10.77.40.99"]
