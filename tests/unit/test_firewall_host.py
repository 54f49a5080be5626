"""The fw never forwards to the Docker host (C-ACC-04, issue 9 item 10).

Each zone's gateway address (its bridge's .1) is the host's. A flow to a whole zone, such as F12
(scanner -> zone:datacenter, any port), matches 10.77.40.0/24 and so the host's 10.77.40.1: the
forward chain must drop the gateways before any flow. Expectations are written out by hand for the
reference lab.
"""

from __future__ import annotations

from pacslab.firewall import render
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

RULES = render(load_lab(DEFAULT_LAB))

GATEWAYS = (
    "\tset docker_host {\n"
    "\t\ttype ipv4_addr\n"
    "\t\telements = { 10.77.10.1, 10.77.20.1, 10.77.30.1, 10.77.31.1, 10.77.40.1,"
    " 10.77.50.1, 10.77.60.1, 10.77.70.1, 10.77.80.1, 10.77.90.1 }\n"
    "\t}\n"
)
HOST_DROP = 'ip daddr @docker_host counter log group 1 prefix "pacslab host " drop'
F12_ACCEPT = 'ip saddr 10.77.50.12 ip daddr 10.77.40.0/24 ct state new counter name "flow_F12" accept'


def forward_chain(text: str) -> list[str]:
    body = text.split("chain forward {", 1)[1].split("\n\t}", 1)[0]
    return [ln.strip() for ln in body.splitlines() if ln.strip()]


def test_the_gateway_set_holds_every_zones_bridge_address() -> None:
    assert GATEWAYS in RULES


def test_the_host_is_dropped_and_logged_after_the_replies_and_before_every_flow() -> None:
    chain = forward_chain(RULES)
    assert chain[:9] == [
        "type filter hook forward priority filter; policy drop;",
        # containment (C-RSP-02): a quarantined address keeps the security zone only
        'ip saddr @quarantine ip daddr != @quarantine_reach meta l4proto tcp counter log group 1 prefix "pacslab quarantine " reject with tcp reset',
        'ip saddr @quarantine ip daddr != @quarantine_reach counter log group 1 prefix "pacslab quarantine " drop',
        'ip daddr @quarantine ip saddr != @quarantine_reach meta l4proto tcp counter log group 1 prefix "pacslab quarantine " reject with tcp reset',
        'ip daddr @quarantine ip saddr != @quarantine_reach counter log group 1 prefix "pacslab quarantine " drop',
        "ct state established,related accept",
        "ct state invalid counter drop",
        HOST_DROP,
        'ip daddr != @lab_nets counter log group 1 prefix "pacslab egress " drop',
    ]
    # then the per-source DICOM limits (C-PRT-05), then one accept per flow, then the logged drop
    dicom = ("ip daddr . tcp dport { 10.77.20.10 . 2762, 10.77.40.10 . 2762, 10.77.40.11 . 2762, 10.77.40.12 . 2762 } ct state new")
    assert chain[9:11] == [
        f'{dicom} update @dicom_rate {{ ip saddr limit rate over 10/second burst 20 packets }} counter log group 1 prefix "pacslab ratelimit " drop',
        f'{dicom} add @dicom_held {{ ip saddr ct count over 4 }} counter log group 1 prefix "pacslab ratelimit " drop',
    ]
    assert all("counter name" in r for r in chain[11:-1])


def test_a_flow_to_a_whole_zone_comes_after_the_host_drop() -> None:
    chain = forward_chain(RULES)
    f12 = next(i for i, r in enumerate(chain) if r.startswith(F12_ACCEPT))
    assert chain.index(HOST_DROP) < f12


def test_the_quarantine_keeps_the_security_zone_and_the_ruleset_includes_its_record() -> None:
    assert "\tset quarantine_reach {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.77.50.0/24 }\n\t}\n" in RULES
    assert RULES.endswith('include "/var/lib/pacslab-fw/quarantine*.nft"\n')
