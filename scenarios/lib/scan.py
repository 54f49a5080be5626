"""A TCP connect scan from this host of every deployed host in the given zones, on the given ports,
all at once (a dropped SYN costs its timeout once). Result: the probes that got any answer (open or
refused: "host:port state"), and how many went unanswered.

args.timeout (seconds) stays under 1: Linux sends a SYN again after its initial retransmission
timeout of 1 s (RFC 6298, 2.1), and a second SYN can meet a quarantine the scan itself brought on
(W2: the fw answers it with a reset), which would read as "refused" where the fw dropped the scan."""

import json
import socket
from concurrent.futures import ThreadPoolExecutor

args, hosts = CONTEXT["args"], CONTEXT["hosts"]  # noqa: F821 (given by the scenario runner)
targets = [(name, h["address"], port) for name, h in sorted(hosts.items())
           if h["deployed"] and h["zone"] in args["zones"] and h["address"] for port in args["ports"]]


def probe(target: tuple) -> str:
    name, address, port = target
    try:
        socket.create_connection((address, port), timeout=args["timeout"]).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, OSError):
        return "unanswered"


with ThreadPoolExecutor(len(targets)) as pool:
    states = list(pool.map(probe, targets))
answered = [f"{n}:{p} {s}" for (n, _, p), s in zip(targets, states, strict=True) if s != "unanswered"]
print(json.dumps({"probed": len(targets), "reached": bool(answered), "answered": answered, "unanswered": states.count("unanswered")}))
