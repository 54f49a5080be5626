"""HTTPS requests with Basic credentials from inside a lab host (the proxy's account at a backend, a
check's or a benchmark's), over the lab's TLS: the lab root as trust, the host's node certificate
when asked. Used by tests/integration (test_rproxy, test_permissions, test_siem) and
bench/detection_latency.py."""

from __future__ import annotations

import json
from typing import Any

from ..topology import Lab
from . import imaging as im

BASIC_AUTH = r"""
import base64, json, socket, ssl, sys, urllib.error, urllib.parse, urllib.request

def alert(url, context):
    # TLS 1.3: the client's handshake ends before the server has judged its certificate, so the
    # server's alert can reach a client that is still writing its request as a reset, and the
    # alert is lost (EOF, no reason). Read first, on a connection of its own: the alert arrives.
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname, u.port or 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=u.hostname) as conn:
            conn.settimeout(5)
            try:
                return "closed" if not conn.recv(1) else "answered"
            except ssl.SSLError as e:
                return e.reason
            except socket.timeout:
                return "no alert"

out = []
for call in json.load(sys.stdin):
    context = ssl.create_default_context(cafile="/etc/pacslab/tls/root.pem")
    if call.get("cert"):
        context.load_cert_chain("/etc/pacslab/tls/node.crt", "/etc/pacslab/tls/node.key")
    request = urllib.request.Request(call["url"], method=call.get("method", "GET"), headers=call.get("headers") or {})
    if call.get("account"):
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(call["account"]).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as answer:
            out.append([answer.status, answer.headers.get("WWW-Authenticate")])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.headers.get("WWW-Authenticate")])
    except (urllib.error.URLError, ssl.SSLError, ConnectionResetError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (ssl.SSLEOFError, ConnectionResetError)) or (isinstance(reason, ssl.SSLError) and reason.reason is None):
            try:
                said = alert(call["url"], context)
            except ssl.SSLError as again:
                said = again.reason
            except OSError as again:
                said = str(again)
        else:
            said = getattr(reason, "reason", str(reason))
        out.append(["tls", said])
print(json.dumps(out))
"""


def basic_auth(lab: Lab, host: str, calls: list[dict[str, Any]]) -> list[list[Any]]:
    """Requests from ``host`` with Basic credentials ({url, method, account: [user, password] or
    None, headers, cert: true to show the host's node certificate}), the lab root as trust; each
    answer as [HTTP status, WWW-Authenticate or None], or ["tls", OpenSSL's reason] when the TLS
    handshake failed (e.g. "TLSV13_ALERT_CERTIFICATE_REQUIRED"). Credentials go to the script on stdin."""
    return list(json.loads(im.exec_in(lab, host, "python3", "-c", BASIC_AUTH, input=json.dumps(calls))))
