"""Finding kernel headers without writing to the host (kernel/headers.py), on made-up trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akto_collector.kernel import headers
from akto_collector.kernel.errors import ProbeError
from akto_collector.kernel.headers import find_kernel_headers, use_kernel_headers


def tree(root: Path, name: str, source: bool, build: bool, makefile: str = "") -> Path:
    d = root / name
    if source:
        (d / "include/linux").mkdir(parents=True)
        (d / "include/linux/kconfig.h").write_text("")
    if build:
        (d / "include/generated").mkdir(parents=True)
        (d / "include/generated/autoconf.h").write_text("")
    if makefile:
        (d / "Makefile").write_text(makefile)
    return d


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "modules").mkdir()
    (tmp_path / "src").mkdir()
    return tmp_path


def find(roots: Path, release: str = "6.18.44-fc-v657"):
    return find_kernel_headers(release, roots / "modules", (roots / "src", roots / "image"), roots / "kheaders.tar.xz")


def test_the_running_kernels_own_headers_are_used_as_they_are(roots):
    build = tree(roots / "modules" / "6.18.44-fc-v657", "build", True, True)
    found = find(roots)
    assert found.kind == "exact" and found.build == build
    assert found.environ() == {} and found.cflags() == []


def test_a_debian_split_pair_is_found_through_its_makefile_and_pointed_at(roots):
    common = tree(roots / "src", "linux-headers-6.1.0-57-common", True, False)
    build = tree(roots / "src", "linux-headers-6.1.0-57-amd64", False, True, f"include {common}/Makefile\n")
    found = find(roots)
    assert (found.kind, found.source, found.build) == ("nearest", common, build)
    assert found.environ() == {"BCC_KERNEL_SOURCE": str(common)}
    assert f"-I{build}/include" in found.cflags()
    assert f"-I{build}/arch/x86/include/generated" in found.cflags()


def test_a_split_pair_mounted_elsewhere_is_found_by_its_sibling(roots):
    # The Makefile names the path of the host it was built on.
    common = tree(roots / "image", "linux-headers-9.9.0-1-common", True, False)
    tree(roots / "image", "linux-headers-9.9.0-1-amd64", False, True,
         "include /usr/src/linux-headers-9.9.0-1-common/Makefile\n")
    assert find(roots).source == common


def test_a_whole_tree_needs_no_extra_include_paths(roots):
    whole = tree(roots / "src", "linux-headers-6.8.0", True, True)
    found = find(roots)
    assert (found.kind, found.source, found.build, found.cflags()) == ("nearest", whole, whole, [])


def test_the_nearest_major_then_the_newest_is_chosen(roots):
    for name in ("linux-headers-5.10.0-9", "linux-headers-6.1.0-12", "linux-headers-6.1.0-57", "linux-headers-4.19.0"):
        tree(roots / "src", name, True, True)
    assert find(roots).source.name == "linux-headers-6.1.0-57"
    assert find(roots, "5.4.0-100-generic").source.name == "linux-headers-5.10.0-9"


def test_a_build_tree_without_its_sources_is_not_used(roots):
    tree(roots / "src", "linux-headers-6.1.0-57-amd64", False, True, "include /nowhere/Makefile\n")
    assert find(roots).kind == "none"


def test_the_kernels_own_archive_is_the_last_resort(roots):
    (roots / "kheaders.tar.xz").write_bytes(b"")
    assert find(roots).kind == "kheaders"
    assert use_kernel_headers(find(roots)) == []


def test_no_headers_at_all_stops_with_what_to_install(roots):
    with pytest.raises(ProbeError, match="no kernel headers for 6.18.44-fc-v657.*linux-headers-amd64"):
        use_kernel_headers(find(roots))


def test_pointing_bcc_at_headers_changes_this_process_only(roots, monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    whole = tree(roots / "src", "linux-headers-6.1.0", True, True)
    assert use_kernel_headers(find(roots)) == []
    assert os.environ["BCC_KERNEL_SOURCE"] == str(whole)
    assert not any((roots / "modules").iterdir())  # nothing written where the host keeps its modules


def test_the_image_headers_path_is_searched():
    assert Path("/opt/akto-collector/kernel-headers") in headers.HEADER_ROOTS
