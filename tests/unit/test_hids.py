"""The Orthanc hosts' own watch, pacslab-hids (roles/orthanc/files/pacslab_hids.py; C-PRT-04,
C-PRT-02, C-DET-03): dpkg's lists read as the allow-list, the verdict on each executable, the
listening sockets of /proc/net, and a whole pass over a /proc tree built here."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("pacslab_hids", HERE.parent.parent / "roles" / "orthanc" / "files" / "pacslab_hids.py")
assert _spec and _spec.loader
hids = importlib.util.module_from_spec(_spec)
sys.modules["pacslab_hids"] = hids  # its dataclasses look their module up
_spec.loader.exec_module(hids)

PACKAGED = {"/usr/sbin/Orthanc": "0" * 32, "/usr/bin/sleep": "1" * 32}
HEADER_TCP = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"


def tcp_line(local: str, remote: str, state: str, inode: int) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000   101        0 {inode} 1 0000000000000000 100 0 0 10 0"


def test_dpkgs_lists_give_each_packaged_file_its_md5_at_its_real_path(tmp_path: Path) -> None:
    """bookworm's merged /usr: dash's list says bin/dash, the file is /usr/bin/dash."""
    if not Path("/bin").is_symlink():
        pytest.skip("this machine's /bin is no symlink (not a merged /usr)")
    (tmp_path / "dash.md5sums").write_text("a" * 32 + "  bin/dash\n" + "b" * 32 + "  usr/share/man/man1/dash.1.gz\n")
    (tmp_path / "orthanc.md5sums").write_text("C" * 32 + "  usr/sbin/Orthanc\nnot a line\n" + "d" * 31 + "  usr/bin/short\n")
    (tmp_path / "orthanc.list").write_text("/usr/sbin/Orthanc\n")  # not an md5sums file: not read
    assert hids.packaged_files(tmp_path) == {"/usr/bin/dash": "a" * 32, "/usr/share/man/man1/dash.1.gz": "b" * 32,
                                             "/usr/sbin/Orthanc": "c" * 32}


@pytest.mark.parametrize(("exe", "ppid", "digest", "expected"), [
    ("/usr/sbin/Orthanc", 1, "0" * 32, None),
    ("/usr/sbin/Orthanc", 1, "f" * 32, "modified"),
    ("/tmp/x", 1, "0" * 32, "not-packaged"),
    ("/usr/local/bin/sleep", 1, "1" * 32, "not-packaged"),
    ("/usr/bin/sleep (deleted)", 1, None, "deleted"),
    ("/memfd:x (deleted)", 1, None, "memory"),
    ("/memfd:runc_cloned:/usr/bin/runc (deleted)", 0, None, None),  # runc's copy for `docker exec`: its parent is outside
    ("/memfd:runc_cloned:/usr/bin/runc (deleted)", 7, None, "memory"),  # the same name from inside the container
    ("/", 0, None, None),  # runc init itself, a file outside the container's file system
    ("/", 7, None, "not-packaged"),
    ("/tmp/x", 0, "0" * 32, "not-packaged"),  # what `docker exec` runs is judged like anything else
])
def test_the_verdict_on_an_executable(exe: str, ppid: int, digest: str | None, expected: str | None) -> None:
    p = hids.Process(pid=42, ppid=ppid, uid=101, started=1000, exe=exe)
    assert hids.verdict(p, PACKAGED, lambda _p: digest) == expected


def test_listening_sockets_outside_loopback_only() -> None:
    tcp = [HEADER_TCP,
           tcp_line("00000000:0ACA", "00000000:0000", "0A", 11),  # 0.0.0.0:2762 LISTEN
           tcp_line("0100007F:1F6A", "00000000:0000", "0A", 12),  # 127.0.0.1:8042 LISTEN
           tcp_line("0A284D0A:0ACA", "0A1E4D0A:D431", "01", 13),  # an established association
           tcp_line("0A284D0A:115C", "00000000:0000", "0A", 14)]  # 10.77.40.10:4444 LISTEN
    tcp6 = [tcp_line("00000000000000000000000000000000:01BB", "00000000000000000000000000000000:0000", "0A", 21),  # [::]:443
            tcp_line("0000000000000000FFFF00000100007F:115D", "00000000000000000000000000000000:0000", "0A", 22),  # ::ffff:127.0.0.1
            tcp_line("00000000000000000000000001000000:115E", "00000000000000000000000000000000:0000", "0A", 23)]  # [::1]:4446
    udp = [tcp_line("00000000:14E9", "00000000:0000", "07", 31),  # 0.0.0.0:5353 unconnected
           tcp_line("0A284D0A:D000", "0B00007F:0035", "01", 32),  # a resolver's connected socket
           tcp_line("00000000:0000", "00000000:0000", "07", 33)]  # unbound
    assert hids.listening(tcp, "tcp") == [hids.Socket("tcp", "0.0.0.0", 2762, 101, 11), hids.Socket("tcp", "10.77.40.10", 4444, 101, 14)]
    assert hids.listening(tcp6, "tcp") == [hids.Socket("tcp", "::", 443, 101, 21)]
    assert hids.listening(udp, "udp") == [hids.Socket("udp", "0.0.0.0", 5353, 101, 31)]


def fake_process(proc: Path, pid: int, exe: Path | str, uid: int = 0, ppid: int = 1, started: int = 500) -> None:
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    os.symlink(exe, d / "exe")
    (d / "stat").write_text(f"{pid} (a (b) c) S {ppid} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {started} 1 1\n")
    (d / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cmdline").write_bytes(str(exe).encode() + b"\x00--marker\x00")


def test_a_pass_reports_each_unexpected_process_once_and_a_listener_after_two_passes(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    packaged_file, dropped = tmp_path / "Orthanc", tmp_path / "dropped"
    packaged_file.write_bytes(b"orthanc")
    dropped.write_bytes(b"not from a package")
    packaged = {str(packaged_file): hashlib.md5(b"orthanc").hexdigest()}
    fake_process(proc, 10, packaged_file, uid=os.getuid())
    (proc / "net" / "tcp").write_text("\n".join([HEADER_TCP, tcp_line("00000000:0ACA", "00000000:0000", "0A", 11)]) + "\n")
    watch = hids.Watch({("tcp", 2762)}, packaged, proc)
    assert watch.step() == []

    fake_process(proc, 20, dropped, uid=os.getuid())
    (proc / "net" / "tcp").write_text("\n".join([HEADER_TCP, tcp_line("00000000:0ACA", "00000000:0000", "0A", 11),
                                                 tcp_line("00000000:115C", "00000000:0000", "0A", 14)]) + "\n")
    first = watch.step()
    assert [{k: e[k] for k in ("event", "reason", "pid", "ppid", "exe", "sha256", "cmdline")} for e in first] == [
        {"event": "unexpected-exec", "reason": "not-packaged", "pid": 20, "ppid": 1, "exe": str(dropped),
         "sha256": hashlib.sha256(b"not from a package").hexdigest(), "cmdline": f"{dropped} --marker"}]
    second = watch.step()  # the listener is there a second time: reported, with its owner (uid 101 in the table)
    assert [{k: e[k] for k in ("event", "proto", "address", "port", "inode")} for e in second] == [
        {"event": "unexpected-listener", "proto": "tcp", "address": "0.0.0.0", "port": 4444, "inode": 14}]
    assert second[0]["user"] == hids._user(101)
    assert watch.step() == []  # each once

    (proc / "20" / "stat").write_text("20 (x) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 900 1 1\n")  # PID 20 again, another process
    assert [e["event"] for e in watch.step()] == ["unexpected-exec"]
    os.remove(proc / "10" / "exe")
    os.symlink(dropped, proc / "10" / "exe")  # the packaged process execs the dropped file: same PID, same start
    assert [(e["event"], e["pid"]) for e in watch.step()] == [("unexpected-exec", 10)]
    json.dumps(first + second)  # what is written is JSON


def test_a_replaced_packaged_binary_is_modified(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    packaged_file = tmp_path / "sleep"
    packaged_file.write_bytes(b"a trojan in sleep's place")
    fake_process(proc, 30, packaged_file, uid=os.getuid())
    watch = hids.Watch(set(), {str(packaged_file): hashlib.md5(b"sleep").hexdigest()}, proc)
    assert [(e["event"], e["reason"]) for e in watch.step()] == [("unexpected-exec", "modified")]
