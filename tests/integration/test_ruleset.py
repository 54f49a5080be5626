"""C-AST-03 (CSF ID.AM-3): the fw enforces exactly the flow matrix of the lab definition.

The live ruleset (nft -j list ruleset in the fw) is compared with what pacslab.firewall renders,
canonicalised by nft itself in a throw-away container (no network), handles and counter values
removed. Its negative twin, drift made by hand detected and the rendered ruleset put back by
`pacslab up`, shares that `up` with containment's check that the quarantine set survives it
(test_response: test_up_repairs_drift_and_keeps_the_quarantine_when_it_loads_the_ruleset_again).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pacslab.docker import docker
from pacslab.firewall import RUNTIME_SETS, render
from pacslab.plan import Plan
from pacslab.topology import Lab

pytestmark = pytest.mark.control("C-AST-03")


def canonical(listing: str) -> list[dict[str, Any]]:
    """nft JSON without what changes at run time: handles, counter values, metainfo, the elements
    traffic puts in the rate-limit sets (pacslab.firewall.RUNTIME_SETS) and the quarantined
    addresses (containment's state, C-RSP-02, not the flow matrix)."""
    out = []
    for obj in json.loads(listing)["nftables"]:
        if "metainfo" in obj:
            continue
        (kind, body), = obj.items()
        body = {k: v for k, v in body.items() if k not in ("handle", "packets", "bytes")}
        if kind == "set" and body.get("name") in (*RUNTIME_SETS, "quarantine"):
            body.pop("elem", None)
        if kind == "rule":
            body["expr"] = [e for e in body["expr"] if "counter" not in e or isinstance(e["counter"], str)]
        out.append({kind: body})
    return out


def rendered_listing(plan: Plan, lab: Lab) -> str:
    """nft's own JSON for the rendered ruleset, loaded in a scratch namespace (--network none)."""
    fw_image = next(c.image for c in plan.containers if c.host == lab.router.name)
    return docker(
        "run", "--rm", "-i", "--network", "none", "--cap-add", "NET_ADMIN", "--entrypoint", "sh", fw_image,
        "-c", "nft -f - && nft -j list ruleset", input=render(lab),
    ).stdout


def diff(live: list[dict[str, Any]], want: list[dict[str, Any]]) -> list[str]:
    extra = [json.dumps(o) for o in live if o not in want]
    missing = [json.dumps(o) for o in want if o not in live]
    return [f"+ {e}" for e in extra] + [f"- {m}" for m in missing]


def test_live_ruleset_equals_rendered(running_lab: Lab, plan: Plan, fw_exec, evidence) -> None:
    live = canonical(fw_exec("nft", "-j", "list", "ruleset"))
    want = canonical(rendered_listing(plan, running_lab))
    evidence.update(objects=len(want), rules=sum("rule" in o for o in want), differences=diff(live, want)[:20])
    assert live == want, "live fw ruleset differs from the flow matrix:\n" + "\n".join(diff(live, want)[:20])
