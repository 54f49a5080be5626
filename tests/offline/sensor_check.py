"""The sensor's rules on crafted captures, offline: `python -m tests.offline.sensor_check [IMAGE]`.

The role's own suricata.yaml (rendered for the reference lab's sensor by Ansible's templar, as
tests/unit/test_role_rendering.py does) and its rules (roles/sensor/files/pacslab.rules) run with
``suricata -r`` on each capture of tests/offline/ids_pcaps.py inside a throw-away container of the
sensor image, without a network (``--network none``); each capture must fire exactly the sids it
names (the negatives: none). It needs the image and a Docker engine, not a lab: the unit suite
runs without Docker (docs/architecture.md section 8), and the integration suite holds the lab's
lock, so it lives here. IMAGE defaults to the plan's sensor image (built by `pacslab up`'s images
phase), or SENSOR_IMAGE.

Exit codes: 0 every capture fired what it must; 1 one did not (each is printed); 4 this machine
cannot run the check (no Docker engine, no such image).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pacslab.plan import build_plan
from pacslab.topology import REPO_ROOT, load_lab
from tests.offline import ids_pcaps
from tests.unit.test_role_rendering import LABS, Renderer

RULES = REPO_ROOT / "roles" / "sensor" / "files" / "pacslab.rules"


def default_image() -> str:
    if os.environ.get("SENSOR_IMAGE"):
        return os.environ["SENSOR_IMAGE"]
    plan = build_plan(load_lab(LABS["default"]))
    return next(i.tag for i in plan.images if i.name == "sensor")


def run(image: str, work: Path) -> dict[str, list[dict[str, object]]]:
    """Each capture's EVE records, from one container that reads them all."""
    (work / "pcaps").mkdir()
    (work / "out").mkdir(mode=0o777)
    (work / "out").chmod(0o777)  # the container's root writes there whatever the host's umask
    expected = {name: sids for name, _, sids in ids_pcaps.write(work / "pcaps")}
    config = Renderer(LABS["default"])("sensor", "sensor", "suricata.yaml.j2", sensor_interface="eth0", ansible_managed="pacslab")
    (work / "suricata.yaml").write_text(config)
    script = ("for p in /pcaps/*.pcap; do n=$(basename $p .pcap); mkdir -p /out/$n; "
              "suricata -r $p -c /etc/suricata/suricata.yaml -l /out/$n > /out/$n/suricata.out 2>&1 || exit 1; done")
    subprocess.run(["docker", "run", "--rm", "--network", "none", "--cpus", "1",
                    "-v", f"{work / 'suricata.yaml'}:/etc/suricata/suricata.yaml:ro", "-v", f"{RULES}:/etc/suricata/pacslab.rules:ro",
                    "-v", f"{work / 'pcaps'}:/pcaps:ro", "-v", f"{work / 'out'}:/out", "--entrypoint", "sh", image, "-c", script],
                   check=True, capture_output=True, text=True)
    out = {}
    for name in expected:
        eve = work / "out" / name / "eve.json"
        out[name] = [json.loads(line) for line in eve.read_text().splitlines()] if eve.is_file() else []
    return out


def main(argv: list[str]) -> int:
    image = argv[0] if argv else default_image()
    probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"cannot run: no image {image} (or no Docker engine): {probe.stderr.strip()}", file=sys.stderr)
        return 4
    expected = {name: sids for name, (_, sids) in ids_pcaps.captures().items()}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = run(image, Path(tmp))
        except subprocess.CalledProcessError as exc:
            print(f"suricata failed: {exc.stdout}{exc.stderr}", file=sys.stderr)
            return 1
    failed = 0
    for name, sids in expected.items():
        alerts = [e for e in found[name] if e.get("event_type") == "alert"]
        fired = sorted({int(e["alert"]["signature_id"]) for e in alerts})  # type: ignore[index]
        ok = set(fired) == sids
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: fired {fired or 'nothing'} ({len(alerts)} alerts), expected {sorted(sids) or 'nothing'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
