"""pacslab Pulumi program: `pulumi up` declares the lab's networks, images, volumes, containers.

The lab folder (config `lab`, default inventories/default) is read and validated by pacslab;
a broken definition stops here with file, key and reason, before any resource is declared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from infra.lab import deploy  # noqa: E402
from pacslab.plan import build_plan  # noqa: E402
from pacslab.topology import load_lab  # noqa: E402

lab = load_lab(REPO_ROOT / (pulumi.Config().get("lab") or "inventories/default"))
resources = deploy(build_plan(lab))
pulumi.export("networks", {name: zone.network.id for name, zone in resources.zones.items()})
pulumi.export("containers", [h.container.name for h in resources.hosts])
