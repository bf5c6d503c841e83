"""doctor's checks on simulated hosts (faults through its inputs), and its output forms."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from akto_collector import doctor
from akto_collector.config import Settings
from akto_collector.kernel.headers import Headers

ALL_CAPS = (1 << 40) - 1


def fake_tracefs(root: Path, sock: bool = True, uprobes: bool = True) -> Path:
    t = root / "tracing"
    for side in ("enter", "exit"):
        for call in ("accept4", "connect", "close", "read", "write"):
            (t / "events" / "syscalls" / f"sys_{side}_{call}").mkdir(parents=True)
    if sock:
        for ev in ("sock_recv_length", "sock_send_length"):
            (t / "events" / "sock" / ev).mkdir(parents=True)
    if uprobes:
        (t / "uprobe_events").write_text("")
    return t


@pytest.fixture
def host(tmp_path):
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"")
    return doctor.Host(
        release="6.18.44-fc-v657", euid=0, caps=ALL_CAPS, tracefs=fake_tracefs(tmp_path),
        debugfs_tracing=tmp_path / "debug" / "tracing", btf=btf,
        find_headers=lambda release: Headers("exact", release),
        compile_and_load=lambda includes: None, port_free=lambda addr: None, reachable=lambda addr: None,
        tls_coverage=lambda settings: ({"openssl": 3, "go": 2}, 1),
        core_status=lambda: {"akto_collector.worker": "compiled"})


def by_name(results) -> dict[str, doctor.Check]:
    return {c.name: c for c in results}


def settings(**env) -> Settings:
    return Settings.from_env(env)


def test_a_healthy_host_passes_every_check_and_exits_0(host):
    out = io.StringIO()
    assert doctor.run_checks(settings(), host=host, out=out) == 0
    lines = out.getvalue().splitlines()
    assert all(line.startswith("ok") for line in lines[:-1]), lines
    assert "go 2" in out.getvalue() and "openssl 3" in out.getvalue()
    assert lines[-1] == "capture can work on this host"


@pytest.mark.parametrize("fault, name, fix", [
    (dict(release="5.10.0-28-amd64"), "kernel", "newer kernel"),
    (dict(btf=Path("/nonexistent/vmlinux")), "btf", "CONFIG_DEBUG_INFO_BTF"),
    (dict(tracefs=Path("/nonexistent/tracing")), "tracefs", "mount -t tracefs"),
    (dict(find_headers=lambda r: Headers("none", r)), "headers", "linux-headers"),
    (dict(euid=1000), "capabilities", "capabilities add [BPF, PERFMON"),
    (dict(caps=0), "capabilities", "run as root"),
    (dict(compile_and_load=lambda inc: "compiling a trivial program failed: boom"), "load", "compiler"),
    (dict(port_free=lambda a: "Address already in use"), "metrics", "another collector"),
    (dict(core_status=lambda: {"akto_collector.worker": "stale"}), "core", "make setup"),
])
def test_each_fault_fails_its_check_with_the_fix_and_exits_1(host, fault, name, fix):
    for k, v in fault.items():
        setattr(host, k, v)
    results = by_name(doctor.checks(settings(), host))
    assert results[name].status == doctor.FAIL
    assert fix in results[name].fix
    assert doctor.run_checks(settings(), host=host, out=io.StringIO()) == 1


def test_an_unreachable_broker_fails_only_when_one_is_configured(host):
    host.reachable = lambda addr: "Connection refused"
    assert by_name(doctor.checks(settings(), host))["kafka"].status == doctor.OK
    kafka = by_name(doctor.checks(settings(AKTO_KAFKA_BROKER_MAL="10.9.9.9:9092"), host))["kafka"]
    assert kafka.status == doctor.FAIL and "10.9.9.9:9092 (Connection refused)" in kafka.detail


def test_what_only_lessens_capture_warns_and_still_exits_0(tmp_path, host):
    host.tracefs = fake_tracefs(tmp_path / "old", sock=False, uprobes=False)
    host.find_headers = lambda r: Headers("nearest", r, Path("/usr/src/a-common"), Path("/usr/src/a-amd64"))
    host.caps = ALL_CAPS & ~(1 << doctor.CAP_SYS_PTRACE) & ~(1 << doctor.CAP_SYS_ADMIN)
    host.tls_coverage = lambda s: ({}, 0)
    results = by_name(doctor.checks(settings(), host))
    for name in ("tracepoints", "uprobes", "headers", "capabilities", "tls"):
        assert results[name].status == doctor.WARN, results[name]
    assert "read/write syscall tracepoints" in results["tracepoints"].detail
    assert "SYS_PTRACE" in results["capabilities"].fix
    assert doctor.run_checks(settings(), host=host, out=io.StringIO()) == 0


def test_json_output_carries_every_check_and_the_verdict(host):
    host.port_free = lambda a: "Address already in use"
    out = io.StringIO()
    assert doctor.run_checks(settings(), as_json=True, host=host, out=out) == 1
    doc = orjson.loads(out.getvalue())
    assert doc["capture_possible"] is False
    names = [c["name"] for c in doc["checks"]]
    assert {"kernel", "btf", "tracefs", "headers", "tracepoints", "uprobes", "capabilities", "load", "tls",
            "kafka", "metrics", "core"} <= set(names)
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in doc["checks"])
