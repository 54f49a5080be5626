"""The plan both engines map: apt sources read from the host, content-hash image tags, no privileges."""

from __future__ import annotations

from pathlib import Path

from pacslab.plan import AptSources, build_plan, read_apt_sources
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

APT = AptSources(mirror="http://mirror.example/debian", files={"debian.sources": "Types: deb\n"})


def test_deb822_sources_give_the_main_mirror_not_security(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    (d / "old.list.disabled-by-farm").write_text("deb http://nope/ bookworm main\n")
    apt = read_apt_sources((d,), tmp_path / "sources.list")
    assert apt.mirror == "http://deb.example/debian"
    assert list(apt.files) == ["debian.sources"]


def test_one_line_sources_list(tmp_path: Path) -> None:
    legacy = tmp_path / "sources.list"
    legacy.write_text("# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\ndeb http://security.example bookworm-security main\n")
    apt = read_apt_sources((tmp_path / "none",), legacy)
    assert apt.mirror == "http://ftp.example/debian"
    assert "host-sources.list" in apt.files


def test_only_the_router_holds_net_admin_and_forwards() -> None:
    lab = load_lab(DEFAULT_LAB)
    plan = build_plan(lab, APT)
    for c in plan.containers:
        if c.host == "fw":
            assert c.capabilities == ["NET_ADMIN"] and c.sysctls == {"net.ipv4.ip_forward": "1"}
            assert len(c.networks) == len(lab.zones) and c.router is None
        else:
            assert c.capabilities == [] and c.sysctls == {"net.ipv4.ip_forward": "0"}


def test_image_tags_follow_content(tmp_path: Path) -> None:
    a = build_plan(load_lab(DEFAULT_LAB), APT)
    b = build_plan(load_lab(DEFAULT_LAB), AptSources(APT.mirror, {"debian.sources": "Types: deb\nURIs: other\n"}))
    assert a == build_plan(load_lab(DEFAULT_LAB), APT)  # stable: a warm up rebuilds nothing
    assert a.base.tag != b.base.tag  # other apt sources, other base
    assert {i.name for i in a.images} == {"ca", "dicom", "fw", "orthanc", "tools"}
    assert all(i.tag.startswith(f"pacslab/{i.name}:") for i in a.images)


def test_networks_are_one_per_zone_with_the_bridge_name() -> None:
    plan = build_plan(load_lab(DEFAULT_LAB), APT)
    assert [(n.name, n.bridge, n.subnet) for n in plan.networks][:2] == [
        ("pacslab-enterprise", "lab-enterprise", "10.77.10.0/24"),
        ("pacslab-clinical", "lab-clinical", "10.77.20.0/24"),
    ]
    assert plan.docker_user_comment == "pacslab:default" and plan.bridge_glob == "lab-+"
