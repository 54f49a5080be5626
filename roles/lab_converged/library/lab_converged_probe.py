#!/usr/bin/python
"""Run each node's converge probe from the controller, in parallel: one ``docker exec`` per node.

The probe (templates/probe.sh.j2) prints a 16-hex digest of what the roles manage on the node.
Run as a task on every node, it cost a warm `up` about 7 s: Mitogen bootstraps its interpreter in
each container before the first command, even in a container the next task skips. From here, a
node that is skipped costs one `docker exec` of bash; a node that converges is reached by Ansible
afterwards anyway.
"""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: lab_converged_probe
short_description: Each node's converge probe, run through docker exec from the controller, in parallel
description:
  - Runs the bash script given for each node in its container (C(docker exec -i CONTAINER bash -s),
    the script on standard input) and returns the digest it prints. The Docker engine is the one the
    controller's C(docker) command reaches (C(DOCKER_HOST) included), as for the lab's connection.
  - A node whose probe fails (container stopped, missing) gets an empty digest, which equals no record,
    so the node converges in full.
options:
  nodes:
    description: Per inventory host, the container to run in and the probe script.
    type: dict
    required: true
  workers:
    description: How many probes run at once.
    type: int
    default: 8
  timeout:
    description: Seconds one probe may take before it counts as failed.
    type: int
    default: 60
"""

RETURN = r"""
digests:
  description: Per inventory host, the probe's digest (16 hex digits), or an empty string when the probe failed.
  type: dict
  returned: always
errors:
  description: Per inventory host whose probe failed, the reason (exit status and the end of its error output).
  type: dict
  returned: always
"""


def probe(container: str, script: str, timeout: int) -> tuple[str, str]:
    """(digest, error): the script's last output line, or "" and why not."""
    try:
        proc = subprocess.run(["docker", "exec", "-i", container, "/bin/bash", "-s"], input=script, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "", f"no answer within {timeout} s"
    except OSError as exc:  # no docker command on the controller
        return "", f"docker exec could not run: {exc}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return "", f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return lines[-1].strip(), ""


def main() -> None:
    module = AnsibleModule(argument_spec={"nodes": {"type": "dict", "required": True},
                                          "workers": {"type": "int", "default": 8},
                                          "timeout": {"type": "int", "default": 60}},
                           supports_check_mode=True)
    nodes = module.params["nodes"]
    for host, node in nodes.items():
        if not isinstance(node, dict) or not node.get("container") or "script" not in node:
            module.fail_json(msg=f"nodes.{host}: expected {{container, script}}, got {node!r}")
    with ThreadPoolExecutor(max_workers=max(1, module.params["workers"])) as pool:
        futures = {host: pool.submit(probe, str(node["container"]), str(node["script"]), module.params["timeout"])
                   for host, node in nodes.items()}
        results = {host: future.result() for host, future in futures.items()}
    errors = {h: r[1] for h, r in results.items() if r[1]}
    for host, why in sorted(errors.items()):
        module.warn(f"{host}: its converge probe failed ({why}); it converges in full")
    module.exit_json(changed=False, digests={h: r[0] for h, r in results.items()}, errors=errors)


if __name__ == "__main__":
    main()
