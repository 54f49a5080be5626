"""Syslog senders for the siem checks: one message to a syslog-over-TLS receiver (RFC 5425,
octet-counted framing) from inside a lab host, in cleartext, over TLS without a certificate, or
over TLS with the host's own lab certificate; what the receiver did with it.

The sender runs in the host's container (its Python, its address, its certificate), so the fw and
the receiver see the host itself.
"""

from __future__ import annotations

import json
from typing import Any

from ..topology import Lab
from .imaging import exec_in

# Runs inside the container: reads {address, port, mode, message} on stdin, prints one JSON object:
# {"handshake": "ok" | "<TLS alert or error>" | null, "outcome": "open" | "closed" | "reset" | "alert", "alert": ...}.
# "open": the receiver held the session 3 s before and 3 s after the message (it took it).
SCRIPT = r'''
import json, socket, ssl, sys
req = json.load(sys.stdin)
msg = req["message"].encode()
frame = str(len(msg)).encode() + b" " + msg
out = {"handshake": None, "outcome": None, "alert": None}
raw = socket.create_connection((req["address"], req["port"]), timeout=20)
conn = raw
try:
    if req["mode"] != "cleartext":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the receiver's refusal is what is checked, not its certificate
        if req["mode"] == "tls-own-certificate":
            ctx.load_cert_chain("/etc/pacslab/tls/node.crt", "/etc/pacslab/tls/node.key")  # the leaf, as rsyslog sends it
        try:
            conn = ctx.wrap_socket(raw)
            out["handshake"] = "ok"
        except ssl.SSLError as exc:
            out.update(handshake=exc.reason or str(exc), outcome="alert", alert=exc.reason)
            print(json.dumps(out)); sys.exit(0)
    # Read first: a receiver that refuses the client's certificate says so right after the
    # handshake (TLS 1.3), and an alert that meets a client still writing is lost in a reset.
    conn.settimeout(3)
    try:
        data = conn.recv(1024)
        out["outcome"] = "closed" if not data else "answered"
    except socket.timeout:
        conn.sendall(frame)
        try:
            data = conn.recv(1024)
            out["outcome"] = "closed" if not data else "answered"
        except socket.timeout:
            out["outcome"] = "open"
        except ConnectionResetError:
            out["outcome"] = "reset"
    except ssl.SSLError as exc:
        out.update(outcome="alert", alert=exc.reason or str(exc))
    except ConnectionResetError:
        out["outcome"] = "reset"
finally:
    conn.close()
print(json.dumps(out))
'''


def send(lab: Lab, host: str, siem: str, mode: str, message: str) -> dict[str, Any]:
    """Send ``message`` (an RFC 5424 line) from ``host`` to ``siem``'s syslog-tls port. mode:
    "cleartext", "tls-no-certificate" or "tls-own-certificate". Returns {handshake, outcome, alert}:
    handshake "ok" or the TLS alert (OpenSSL's reason, as Python's ssl names it); outcome "open" (the
    receiver held the session), "closed", "reset", "answered" or "alert"."""
    target = lab.hosts[siem]
    request = {"address": str(target.address), "port": target.service("syslog-tls").port, "mode": mode, "message": message}
    result: dict[str, Any] = json.loads(exec_in(lab, host, "python3", "-c", SCRIPT, input=json.dumps(request), timeout=60))
    return result
