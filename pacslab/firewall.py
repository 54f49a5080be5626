"""Render the zone firewall's nftables ruleset from the flow matrix (C-AST-03, C-ACC-04).

CSF PR.AC-5 (network segregation) and ID.AM-3 (flows mapped): the forward chain drops by default
and accepts exactly the flows of the lab definition, one named counter per flow. Every drop is
logged to NFLOG group ``LOG_GROUP`` with a prefix saying why, for ulogd2 to write as JSON lines.
Each zone's gateway address (its bridge's ``.1``) is the Docker host's, never a lab host's: the
forward chain drops traffic to it before any flow, so a flow to a whole zone (F12, the scanner)
does not carry a zone's traffic to the host through the fw.
"""

from __future__ import annotations

from collections.abc import Iterable

from .topology import Endpoint, Flow, Lab

LOG_GROUP = 1
TABLE = "pacslab"
# Log prefixes: the NFLOG JSON lines carry them as oob.prefix, the tests read them back.
PREFIX_DENY = "pacslab deny "
PREFIX_EGRESS = "pacslab egress "
PREFIX_SPOOF = "pacslab spoof "
PREFIX_QUARANTINE = "pacslab quarantine "
PREFIX_INPUT = "pacslab input "
PREFIX_HOST = "pacslab host "
PREFIX_RATE = "pacslab ratelimit "
# Availability (C-PRT-05, PR.DS-4): per source address, new DICOM connections through the fw are
# limited in rate (DICOM_RATE, nft limit syntax) and in number held open at once (DICOM_HELD); the
# excess is dropped and logged. A modality opens one association per series; a flood of 40 at once
# from one device loses most of its SYNs here while the other devices' traffic passes. DICOM_HELD
# stays below the associations Orthanc serves at once (roles/orthanc orthanc_dicom_threads, 8): with
# 12, one flooding modality held all of Orthanc's 4 default threads and another's store took 5.6x longer.
DICOM_RATE = "10/second burst 20 packets"
DICOM_HELD = 4
RUNTIME_SETS = ("dicom_rate", "dicom_held")  # filled by traffic: their elements are state, not configuration
# Containment (C-RSP-02, RS.MI-1): the fw's `quarantine` set is filled by roles/firewall's
# pacslab-quarantine (`pacslab quarantine HOST`), which records each address in QUARANTINE_STATE and
# rewrites the `add element` lines there; the ruleset includes them (a glob: none is not an error),
# so loading the ruleset again keeps the set. A quarantined address keeps only the zones of
# QUARANTINE_REACH: the security zone, where its logs go and from where it is examined.
QUARANTINE_STATE = "/var/lib/pacslab-fw"
QUARANTINE_INCLUDE = f"{QUARANTINE_STATE}/quarantine*.nft"
QUARANTINE_REACH = ("security",)
# Network monitoring (C-DET-01, DE.CM-1): the fw copies every packet it forwards to each deployed
# host of the group SENSOR_GROUP (the IDS, roles/sensor), nftables' dup statement: the kernel routes
# the copy to the sensor's address as its next hop, out of the fw's interface on the sensor's zone
# (the route to that address picks it: the ruleset is rendered on the controller and never knows
# the names Docker gives the fw's interfaces). The kernel has no NFQUEUE: the sensor watches, it
# does not sit inline. nftables 1.0.6 has dup in the ip family only (in an inet table: "unsupported
# family"), so the copy is a table of its own, hooked at forward before the filtering chain
# (MIRROR_PRIORITY): packets the ruleset then drops (a scan, a quarantined host's) are copied too.
# The sensor's own traffic is never copied; a copy leaves through the fw's output path, which copies nothing.
SENSOR_GROUP = "sensors"
MIRROR_TABLE = "pacslab_mirror"
MIRROR_PRIORITY = "filter - 10"


def counter_name(flow: Flow) -> str:
    return f"flow_{flow.id}"


def endpoint_addresses(lab: Lab, endpoints: Iterable[Endpoint]) -> list[str]:
    """Each endpoint's address as the ruleset matches it: a zone's subnet, a host's IPv4 address."""
    out: list[str] = []
    for ep in endpoints:
        if ep.kind == "zone":
            out.append(str(lab.zones[ep.name].subnet))
        else:
            out.append(str(lab.hosts[ep.name].address))
    return out


def _set_expr(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def flow_rules(lab: Lab, flow: Flow) -> list[str]:
    """The accept rules of one flow (one per protocol)."""
    src = _set_expr(endpoint_addresses(lab, flow.sources))
    dst = _set_expr(endpoint_addresses(lab, [flow.dest]))
    match = f"ip saddr {src} ip daddr {dst}"
    tail = f'ct state new counter name "{counter_name(flow)}" accept comment {_quote(flow.id + " " + flow.purpose[:100])}'
    if flow.ports is None:
        return [f"{match} {tail}"]
    ports = _set_expr([str(p) for p in flow.ports])
    protos = ["tcp", "udp"] if flow.proto == "any" else [flow.proto]
    return [f"{match} {proto} dport {ports} {tail}" for proto in protos]


def dicom_endpoints(lab: Lab) -> list[str]:
    """``address . port`` of every DICOM service of the lab (lab_services.dicom), for the rate limits."""
    return sorted(f"{h.address} . {s.port}" for h in lab.hosts.values() if h.address is not None
                  for s in h.services if s.name == "dicom" and s.proto == "tcp")


def quarantine_reach(lab: Lab) -> list[str]:
    """The subnets a quarantined address may still reach and be reached from: the zones of
    QUARANTINE_REACH that the lab has (none: a quarantined address reaches nothing)."""
    return [str(lab.zones[z].subnet) for z in QUARANTINE_REACH if z in lab.zones]


def quarantine_rules(lab: Lab) -> list[str]:
    """First rules of the forward chain: TCP from or to a quarantined address is answered with a
    reset (an open connection ends at its next segment, on each end that speaks), anything else is
    dropped; both logged with PREFIX_QUARANTINE. Traffic with the reach zones goes on to the flows."""
    reach = bool(quarantine_reach(lab))
    rules = []
    for ours, theirs in (("saddr", "daddr"), ("daddr", "saddr")):
        match = f"ip {ours} @quarantine" + (f" ip {theirs} != @quarantine_reach" if reach else "")
        log = f'counter log group {LOG_GROUP} prefix "{PREFIX_QUARANTINE}"'
        rules += [f"{match} meta l4proto tcp {log} reject with tcp reset", f"{match} {log} drop"]
    return rules


def sensor_addresses(lab: Lab) -> list[str]:
    """The addresses of the lab's deployed sensors (group SENSOR_GROUP), in definition order."""
    return [str(h.address) for h in lab.group(SENSOR_GROUP) if h.deployed and h.address is not None]


def mirror_lines(lab: Lab) -> list[str]:
    """The mirror table (none without a deployed sensor): one dup rule per sensor, for every
    forwarded packet that is not from or to a sensor."""
    sensors = sensor_addresses(lab)
    if not sensors:
        return []
    own = _set_expr(sensors)
    return [
        "# Network monitoring (C-DET-01): a copy of every forwarded packet to the IDS sensor, before the",
        "# forward chain filters it (dropped packets are copied too); the sensor's own traffic is not.",
        f"table ip {MIRROR_TABLE} {{",
        "\tchain mirror {",
        f"\t\ttype filter hook forward priority {MIRROR_PRIORITY}; policy accept;",
        *(f"\t\tip saddr != {own} ip daddr != {own} dup to {address}" for address in sensors),
        "\t}",
        "}",
        "",
    ]


def render(lab: Lab) -> str:
    """The complete ruleset for the ``fw`` host, as ``nft -f`` input."""
    nets = ", ".join(str(z.subnet) for z in lab.zones.values())
    reach = quarantine_reach(lab)
    gateways = ", ".join(str(z.gateway) for z in lab.zones.values())
    lines = [
        f"# Generated by pacslab from the lab definition {lab.name!r}; do not edit.",
        "# Source of truth: the lab's lab_flows. C-ACC-04 (PR.AC-5), C-AST-03 (ID.AM-3).",
        "flush ruleset",
        "",
        f"table inet {TABLE} {{",
        "\tset lab_nets {",
        "\t\ttype ipv4_addr",
        "\t\tflags interval",
        f"\t\telements = {{ {nets} }}",
        "\t}",
        "",
        "\t# The Docker host's address on each zone's bridge: outside the lab, never forwarded to.",
        "\tset docker_host {",
        "\t\ttype ipv4_addr",
        f"\t\telements = {{ {gateways} }}",
        "\t}",
        "",
        "\t# Availability (C-PRT-05): sources seen opening DICOM connections, with their rate and held count.",
        "\tset dicom_rate {",
        "\t\ttype ipv4_addr",
        "\t\tflags dynamic",
        "\t\ttimeout 1m",
        "\t}",
        "\tset dicom_held {",
        "\t\ttype ipv4_addr",
        "\t\tsize 65535",
        "\t\tflags dynamic",
        "\t}",
        "",
        "\t# Containment: addresses added here lose every path through the firewall (C-RSP-02).",
        "\tset quarantine {",
        "\t\ttype ipv4_addr",
        "\t\tflags interval",
        "\t}",
    ]
    if reach:
        lines += [
            "\t# What a quarantined address keeps: the security zone.",
            "\tset quarantine_reach {",
            "\t\ttype ipv4_addr",
            "\t\tflags interval",
            f"\t\telements = {{ {', '.join(reach)} }}",
            "\t}",
        ]
    lines.append("")
    for flow in lab.flows:
        lines.append(f"\tcounter {counter_name(flow)} {{ comment {_quote(flow.id)} }}")
    lines += [
        "",
        "\t# Reverse-path check: a source address must arrive on its own zone's interface.",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        f'\t\tfib saddr . iif oif missing counter log group {LOG_GROUP} prefix "{PREFIX_SPOOF}" drop',
        "\t}",
        "",
        "\t# The firewall offers no service of its own.",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state established,related accept",
        f'\t\tcounter log group {LOG_GROUP} prefix "{PREFIX_INPUT}" drop',
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        *(f"\t\t{r}" for r in quarantine_rules(lab)),
        "\t\tct state established,related accept",
        "\t\tct state invalid counter drop",
        f'\t\tip daddr @docker_host counter log group {LOG_GROUP} prefix "{PREFIX_HOST}" drop',
        f'\t\tip daddr != @lab_nets counter log group {LOG_GROUP} prefix "{PREFIX_EGRESS}" drop',
    ]
    dicom = dicom_endpoints(lab)
    # firewall_dicom_limits: false on the fw host (a waived C-PRT-05: workshop W12's break-and-fix run) drops the limits.
    if dicom and lab.host_vars.get(lab.router.name, {}).get("firewall_dicom_limits", True) is not False:
        to_dicom = f"ip daddr . tcp dport {{ {', '.join(dicom)} }} ct state new"
        lines += [
            f"\t\t{to_dicom} update @dicom_rate {{ ip saddr limit rate over {DICOM_RATE} }} counter log group {LOG_GROUP} "
            f'prefix "{PREFIX_RATE}" drop',
            f'\t\t{to_dicom} add @dicom_held {{ ip saddr ct count over {DICOM_HELD} }} counter log group {LOG_GROUP} prefix "{PREFIX_RATE}" drop',
        ]
    for flow in lab.flows:
        lines += [f"\t\t{rule}" for rule in flow_rules(lab, flow)]
    lines += [
        f'\t\tcounter log group {LOG_GROUP} prefix "{PREFIX_DENY}" drop',
        "\t}",
        "}",
        "",
        *mirror_lines(lab),
        "# The quarantined addresses (roles/firewall pacslab-quarantine): a ruleset load keeps them.",
        f'include "{QUARANTINE_INCLUDE}"',
        "",
    ]
    return "\n".join(lines)
