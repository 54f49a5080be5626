"""pacslab status finds the lab's host rules by their exact comment (roles/docker_host, C-ACC-04)."""

from __future__ import annotations

from pacslab.cli import _commented

OWN = '-A INPUT -i hst-+ -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment "pacslab:hostiso" -j DROP'
LONGER = '-A INPUT -i hsx-+ -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment "pacslab:hostiso2" -j DROP'
UNQUOTED = "-A DOCKER-USER -i lab-+ -o lab-+ -m physdev --physdev-is-bridged -m comment --comment pacslab:default -j ACCEPT"


def test_the_labs_own_comment_is_found_quoted_or_not() -> None:
    assert _commented(["-P INPUT ACCEPT", OWN], "pacslab:hostiso", "DROP")
    assert _commented([UNQUOTED], "pacslab:default", "ACCEPT")


def test_the_target_tells_the_labs_rules_in_one_chain_apart() -> None:
    assert not _commented([UNQUOTED], "pacslab:default", "DROP")
    assert not _commented([OWN], "pacslab:hostiso", "ACCEPT")


def test_another_labs_rule_whose_comment_starts_the_same_does_not_count() -> None:
    assert not _commented(["-P INPUT ACCEPT", LONGER], "pacslab:hostiso", "DROP")


def test_a_chain_without_rules_holds_none() -> None:
    assert not _commented(["-P INPUT ACCEPT"], "pacslab:hostiso", "DROP")
    assert not _commented([], "pacslab:hostiso", "DROP")
