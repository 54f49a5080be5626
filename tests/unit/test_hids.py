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


def tcp_line(local: str, remote: str, state: str, inode: int, uid: int = 64999) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 {uid:5d}        0 {inode} 1 0000000000000000 100 0 0 10 0"


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
    """Addresses as the kernel writes them (32-bit words in host order), the owner's uid (64999)."""
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
    assert hids.listening(tcp, "tcp") == [hids.Socket("tcp", "0.0.0.0", 2762, 64999, 11), hids.Socket("tcp", "10.77.40.10", 4444, 64999, 14)]
    assert hids.listening(tcp6, "tcp") == [hids.Socket("tcp", "::", 443, 64999, 21)]
    assert hids.listening(udp, "udp") == [hids.Socket("udp", "0.0.0.0", 5353, 64999, 31)]


def fake_process(proc: Path, pid: int, exe: Path | str, uid: int = 0, ppid: int = 1, started: int = 500,
                 sockets: tuple[int, ...] = (), name: bytes = b"a (b) c") -> None:
    d = proc / str(pid)
    (d / "fdinfo").mkdir(parents=True)
    os.symlink(exe, d / "exe")
    (d / "stat").write_bytes(b"%d (%s) S %d 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %d 1 1\n" % (pid, name, ppid, started))
    (d / "status").write_bytes(b"Name:\t" + name + f"\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n".encode())
    (d / "cmdline").write_bytes(os.fsencode(exe) + b"\x00--marker\x00")
    for i, inode in enumerate(sockets):  # what /proc/PID/fdinfo/N says of a socket (Linux 5.14 on)
        (d / "fdinfo" / str(i + 3)).write_text(f"pos:\t0\nflags:\t02\nmnt_id:\t9\nino:\t{inode}\n")


def net(proc: Path, name: str, *lines: str) -> None:
    (proc / "net" / name).write_text("\n".join([HEADER_TCP, *lines]) + "\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    return tmp_path / "proc"


def test_a_pass_reports_each_unexpected_process_once_and_each_listener_with_its_program(proc: Path, tmp_path: Path) -> None:
    packaged_file, dropped = tmp_path / "Orthanc", tmp_path / "dropped"
    packaged_file.write_bytes(b"orthanc")
    dropped.write_bytes(b"not from a package")
    packaged = {str(packaged_file): hashlib.md5(b"orthanc").hexdigest()}
    fake_process(proc, 10, packaged_file, uid=os.getuid(), sockets=(11,))
    net(proc, "tcp", tcp_line("00000000:0ACA", "00000000:0000", "0A", 11))
    watch = hids.Watch({("tcp", 2762)}, packaged, proc, sockfs=9)
    assert watch.step() == []

    fake_process(proc, 20, dropped, uid=os.getuid(), sockets=(14,))
    net(proc, "tcp", tcp_line("00000000:0ACA", "00000000:0000", "0A", 11), tcp_line("00000000:115C", "00000000:0000", "0A", 14))
    first = watch.step()
    assert [{k: e[k] for k in ("event", "reason", "pid", "ppid", "exe", "sha256", "cmdline")} for e in first if "reason" in e] == [
        {"event": "unexpected-exec", "reason": "not-packaged", "pid": 20, "ppid": 1, "exe": str(dropped),
         "sha256": hashlib.sha256(b"not from a package").hexdigest(), "cmdline": f"{dropped} --marker"}]
    assert [{k: e[k] for k in ("event", "proto", "address", "port", "inode", "user", "pid", "exe")} for e in first if "port" in e] == [
        {"event": "unexpected-listener", "proto": "tcp", "address": "0.0.0.0", "port": 4444, "inode": 14, "user": "64999",
         "pid": 20, "exe": str(dropped)}]
    assert watch.step() == []  # each once

    # the back door closes and opens its socket between two passes: the same listener, not reported again
    net(proc, "tcp", tcp_line("00000000:0ACA", "00000000:0000", "0A", 11), tcp_line("00000000:115C", "00000000:0000", "0A", 15))
    assert watch.step() == []

    (proc / "20" / "stat").write_text("20 (x) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 900 1 1\n")  # PID 20 again, another process
    assert [e["event"] for e in watch.step()] == ["unexpected-exec"]
    os.remove(proc / "10" / "exe")
    os.symlink(dropped, proc / "10" / "exe")  # the packaged process execs the dropped file: same PID, same start
    assert [(e["event"], e["pid"]) for e in watch.step()] == [("unexpected-exec", 10)]
    json.dumps(first)  # what is written is JSON


def test_a_udp_socket_is_a_listener_on_its_second_pass_and_again_after_a_pass_without_it(proc: Path, tmp_path: Path) -> None:
    watch = hids.Watch(set(), {}, proc)
    udp = tcp_line("00000000:14E9", "00000000:0000", "07", 31)  # 0.0.0.0:5353, owner uid 64999 (no user of this machine)
    net(proc, "udp", udp)
    assert watch.step() == []
    assert [(e["event"], e["proto"], e["port"], e["pid"]) for e in watch.step()] == [("unexpected-listener", "udp", 5353, None)]
    assert watch.step() == []
    net(proc, "udp")
    assert watch.step() == []
    net(proc, "udp", udp)
    assert watch.step() == []
    assert [e["port"] for e in watch.step()] == [5353]


def test_a_replaced_packaged_binary_is_modified_even_with_its_old_size_and_mtime(proc: Path, tmp_path: Path) -> None:
    packaged_file = tmp_path / "sleep"
    packaged_file.write_bytes(b"sleep")
    fake_process(proc, 30, packaged_file, uid=os.getuid())
    watch = hids.Watch(set(), {str(packaged_file): hashlib.md5(b"sleep").hexdigest()}, proc)
    assert watch.step() == []
    before = packaged_file.stat()
    packaged_file.write_bytes(b"trojn")  # rewritten in place, same size, its mtime put back (its ctime moves on)
    os.utime(packaged_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    fake_process(proc, 31, packaged_file, uid=os.getuid())
    assert [(e["pid"], e["reason"]) for e in watch.step()] == [(31, "modified")]


def test_a_process_whose_name_is_not_utf8_is_judged_like_any_other(proc: Path, tmp_path: Path) -> None:
    """A file named with a byte that is no UTF-8 (b"\\xff") run as a program: reported, the watch goes on."""
    dropped = tmp_path / os.fsdecode(b"\xff")
    dropped.write_bytes(b"x")
    fake_process(proc, 40, dropped, uid=os.getuid(), name=b"\xff")
    [event] = hids.Watch(set(), {}, proc).step()
    assert (event["pid"], event["reason"], event["exe"]) == (40, "not-packaged", str(dropped))
    assert json.loads(json.dumps(event))["exe"] == str(dropped)


def test_a_process_whose_main_thread_ended_is_judged_and_described_by_another_thread(proc: Path, tmp_path: Path) -> None:
    dropped = tmp_path / "dropped"
    dropped.write_bytes(b"x")
    fake_process(proc, 50, dropped, uid=os.getuid())
    os.remove(proc / "50" / "exe")  # /proc/PID/exe of a process whose main thread ended: ENOENT
    (proc / "50" / "cmdline").write_bytes(b"")  # and its cmdline is empty
    thread = proc / "50" / "task" / "51"
    thread.mkdir(parents=True)
    os.symlink(dropped, thread / "exe")
    (thread / "cmdline").write_bytes(b"/tmp/dropped\x00--worker\x00")
    [event] = hids.Watch(set(), {}, proc, sockfs=9).step()
    assert (event["pid"], event["exe"], event["sha256"], event["cmdline"]) == (50, str(dropped), hashlib.sha256(b"x").hexdigest(),
                                                                               "/tmp/dropped --worker")


def test_the_loader_run_as_a_program_is_reported(proc: Path, tmp_path: Path) -> None:
    loader = tmp_path / "ld-linux-x86-64.so.2"
    loader.write_bytes(b"ld")
    fake_process(proc, 60, loader, uid=os.getuid())
    watch = hids.Watch(set(), {str(loader): hashlib.md5(b"ld").hexdigest()}, proc, sockfs=9)
    assert [(e["pid"], e["reason"]) for e in watch.step()] == [(60, "loader")]


@pytest.mark.parametrize(("state", "expected"), [(b"S", [(62, "unreadable")]), (b"Z", [])])
def test_a_packaged_path_that_cannot_be_read_is_unreadable_unless_its_process_has_ended(proc: Path, state: bytes, expected: list) -> None:
    """The file the link names is gone (as one another user may not read): reported, except when the
    process is a zombie by then (it ended while it was read: its folder stays until it is reaped)."""
    fake_process(proc, 62, "/nonexistent/sleep", uid=os.getuid())
    (proc / "62" / "stat").write_bytes(b"62 (sleep) " + state + b" 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 1 1\n")
    watch = hids.Watch(set(), {"/nonexistent/sleep": "0" * 32}, proc, sockfs=9)
    assert [(e["pid"], e["reason"]) for e in watch.step()] == expected


def test_a_listener_is_one_per_address_and_port_and_its_program_comes_from_a_socket_only(proc: Path, tmp_path: Path) -> None:
    """Two sockets on one address and port (SO_REUSEPORT) are one listener. A process whose file
    (not on sockfs, mount 9) has the socket's inode number does not hold the socket."""
    other = tmp_path / "other"
    other.write_bytes(b"o")
    fake_process(proc, 70, other, uid=os.getuid())
    (proc / "70" / "fdinfo" / "4").write_text("pos:\t0\nflags:\t0100000\nmnt_id:\t31\nino:\t14\n")  # a file, inode 14 on another fs
    net(proc, "tcp", tcp_line("00000000:115C", "00000000:0000", "0A", 14), tcp_line("00000000:115C", "00000000:0000", "0A", 16))
    events = hids.Watch(set(), {str(other): hashlib.md5(b"o").hexdigest()}, proc, sockfs=9).step()
    assert [(e["event"], e["port"], e["pid"]) for e in events] == [("unexpected-listener", 4444, None)]


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("/tmp/x --password hunter2 -v", "/tmp/x --password <redacted> -v"),
    ("/tmp/x PASSWORD=hunter2 token=abc key:xyz", "/tmp/x PASSWORD=<redacted> token=<redacted> key:<redacted>"),
    ("/tmp/x --password= hunter2 --api-key k1 --passphrase p1", "/tmp/x --password= <redacted> --api-key <redacted> --passphrase <redacted>"),
    ('/tmp/x {"password":"hunter2","user":"ada"} pwd=1 auth=2', '/tmp/x {"password":"<redacted>","user":"ada"} pwd=<redacted> auth=<redacted>'),
    ("/tmp/curl -u ada:s3cret -H Authorization: Bearer abc.def https://pacs/", "/tmp/curl -u ada:<redacted> -H Authorization: Bearer <redacted> https://pacs/"),
    ("/tmp/curl https://ada:s3cret@pacs/studies", "/tmp/curl https://ada:<redacted>@pacs/studies"),
    ("/tmp/x bypass:1 http://pacs:8042/ /tmp/pacslab-dropped-1a2b 60", "/tmp/x bypass:1 http://pacs:8042/ /tmp/pacslab-dropped-1a2b 60"),
])
def test_what_looks_like_a_credential_in_a_command_line_is_redacted(cmdline: str, expected: str) -> None:
    assert hids.redact(cmdline) == expected


def test_events_wait_while_the_file_cannot_be_opened_and_none_is_lost(tmp_path: Path) -> None:
    log = hids.EventLog(tmp_path / "rotated-away" / "hids.json")
    log.write([{"event": "a"}])
    log.write([{"event": "b"}])
    (tmp_path / "rotated-away").mkdir()
    log.write([])
    assert [json.loads(line)["event"] for line in (tmp_path / "rotated-away" / "hids.json").read_text().splitlines()] == ["a", "b"]


def test_a_short_write_repeats_nothing_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk takes 10 bytes, then is full: the next write appends the rest, once."""
    log = hids.EventLog(tmp_path / "hids.json")
    real, calls = os.write, []

    def full_after_ten(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[:10]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hids.os, "write", full_after_ten)
    log.write([{"event": "a", "n": 1}, {"event": "b", "n": 2}])
    monkeypatch.setattr(hids.os, "write", real)
    log.write([{"event": "c", "n": 3}])
    assert (tmp_path / "hids.json").read_text() == '{"event": "a", "n": 1}\n{"event": "b", "n": 2}\n{"event": "c", "n": 3}\n'
