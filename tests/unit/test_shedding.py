"""When to shed (supervisor/shedding.py) and what the cgroup says (cgroups.py), on made-up figures and files."""

from __future__ import annotations

from pathlib import Path

from akto_collector import cgroups
from akto_collector.supervisor.shedding import Shedder

MB = 1 << 20


def test_shedding_starts_above_half_and_stops_only_below_a_quarter():
    s = Shedder(64 * MB)
    assert s.decide(10 * MB, kernel_on=False) is None
    assert s.decide(33 * MB, kernel_on=False) == "ring_buffer"
    assert s.decide(20 * MB, kernel_on=True) == "ring_buffer"  # between the marks: stays on
    assert s.decide(15 * MB, kernel_on=True) is None
    assert s.decide(20 * MB, kernel_on=False) is None  # and stays off until the high mark
    assert s.episodes == 1


def test_the_kernels_own_start_is_kept_until_the_ring_drains_below_a_quarter():
    s = Shedder(64 * MB)
    # The ring refused a record between two drains: the kernel set the flag.
    assert s.decide(30 * MB, kernel_on=True) == "ring_buffer_full"
    assert s.decide(10 * MB, kernel_on=True) is None


def test_workers_behind_or_cpu_throttling_shed_with_an_empty_ring():
    s = Shedder(64 * MB)
    assert s.decide(0, kernel_on=False, behind=True) == "workers_behind"
    assert s.decide(0, kernel_on=True, behind=False) is None
    assert s.decide(0, kernel_on=False, throttled=True) is None  # throttled with room: keep capturing
    assert s.decide(20 * MB, kernel_on=False, throttled=True) == "cpu_throttled"
    assert s.decide(10 * MB, kernel_on=True) is None
    assert s.episodes == 2


def write(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_cgroup_v2_quota_throttling_and_working_set(tmp_path):
    root = tmp_path / "cg"
    own = root / "kubepods.slice" / "pod1"
    write(root / "cgroup.controllers", "cpu memory")
    write(own / "cpu.max", "50000 100000\n")
    write(own / "cpu.stat", "usage_usec 10\nnr_periods 9\nnr_throttled 4\nthrottled_usec 77\n")
    write(own / "memory.current", str(300 * MB))
    write(own / "memory.stat", "anon 1\nfile 2\ninactive_file %d\n" % (100 * MB))
    write(tmp_path / "self", "0::/kubepods.slice/pod1\n")
    dirs = cgroups.own_dirs("cpu", str(tmp_path / "self"), root)
    assert dirs[0] == own
    assert cgroups.cpu_quota(dirs) == 0.5
    assert cgroups.throttled_periods(dirs) == 4
    assert cgroups.working_set(cgroups.own_dirs("memory", str(tmp_path / "self"), root)) == 200 * MB


def test_cgroup_v2_unlimited_and_inside_a_namespace(tmp_path):
    root = tmp_path / "cg"
    write(root / "cgroup.controllers", "cpu")
    write(root / "cpu.max", "max 100000\n")
    write(tmp_path / "self", "0::/\n")
    assert cgroups.cpu_quota(cgroups.own_dirs("cpu", str(tmp_path / "self"), root)) is None


def test_cgroup_v1_quota_from_the_cpu_hierarchy(tmp_path):
    root = tmp_path / "cg"
    own = root / "cpu,cpuacct" / "docker" / "abc"
    write(own / "cpu.cfs_quota_us", "150000\n")
    write(own / "cpu.cfs_period_us", "100000\n")
    write(own / "cpu.stat", "nr_periods 3\nnr_throttled 1\n")
    write(tmp_path / "self", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    dirs = cgroups.own_dirs("cpu", str(tmp_path / "self"), root)
    assert dirs[0] == own
    assert cgroups.cpu_quota(dirs) == 1.5
    assert cgroups.throttled_periods(dirs) == 1
    write(own / "cpu.cfs_quota_us", "-1\n")
    assert cgroups.cpu_quota(dirs) is None


def test_no_cgroup_files_means_no_figures(tmp_path):
    assert cgroups.own_dirs("cpu", str(tmp_path / "missing")) == []
    assert cgroups.cpu_quota([]) is None and cgroups.throttled_periods([]) is None
    assert cgroups.working_set([tmp_path]) is None


def test_the_test_hook_sheds_always_in_one_episode():
    s = Shedder(64 * MB, always=True)
    assert s.decide(0, kernel_on=False) == "always" and s.decide(0, kernel_on=True) == "always"
    assert s.decide(40 * MB, kernel_on=True) == "ring_buffer" and s.episodes == 1


def test_the_cgroup_is_ours_when_it_holds_only_our_processes_and_a_helper_or_two(tmp_path):
    asked = []

    def more(others):
        asked.append(others)
        return others == {3}

    (tmp_path / "cgroup.procs").write_text("1\n2\n")
    assert cgroups.holds_only([tmp_path], {1, 2}, more) and not asked  # ours alone: no look beyond
    (tmp_path / "cgroup.procs").write_text("1\n2\n3\n")
    assert cgroups.holds_only([tmp_path], {1, 2}, more) and asked == [{3}]  # a helper of ours
    (tmp_path / "cgroup.procs").write_text("1\n4\n")
    assert not cgroups.holds_only([tmp_path], {1, 2}, more)
    (tmp_path / "cgroup.procs").write_text("\n".join(map(str, range(1, 50))))
    assert not cgroups.holds_only([tmp_path], {1, 2}, more) and len(asked) == 2  # a host's: not asked
    (tmp_path / "cgroup.procs").write_text("")
    assert not cgroups.holds_only([tmp_path], {1, 2}, more)
