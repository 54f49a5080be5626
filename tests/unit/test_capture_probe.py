"""pacslab.probes.imaging's capture: what tcpdump says of the packets the kernel dropped, read as a
check needs it (a capture that lost packets proves no absence)."""

from __future__ import annotations

import pytest

from pacslab.probes.imaging import kernel_drops

ENDED = "tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), snapshot length 262144 bytes\n{}\n"


@pytest.mark.parametrize(("said", "dropped"), [
    ("1479 packets captured\n1502 packets received by filter\n548 packets dropped by kernel", 548),
    ("17 packets captured\n21 packets received by filter\n1 packet dropped by kernel", 1),
    ("36 packets captured\n36 packets received by filter\n0 packets dropped by kernel", 0),
    ("", None),  # tcpdump killed before it could count
    ("0 packets dropped by interface", None),  # the interface's count is not the kernel's
])
def test_the_kernel_s_drops_are_read_from_tcpdump_s_last_words(said: str, dropped: int | None) -> None:
    assert kernel_drops(ENDED.format(said)) == dropped
