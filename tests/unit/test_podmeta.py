"""Which pod a process is in, from /proc: recorded cgroup files of the usual runtimes and drivers, a fake /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akto_collector.supervisor.podmeta import (
    CgroupPod,
    PodProcess,
    environ_value,
    parse_cgroup,
    pod_process,
    read_in_root,
)

UID = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"
UID_ = UID.replace("-", "_")
CID = "8a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a1b"

# /proc/PID/cgroup as the kernel writes it (v1: one line per hierarchy; v2: "0::path").
RECORDED = {
    "v1 cgroupfs containerd burstable": (
        f"12:pids:/kubepods/burstable/pod{UID}/{CID}\n11:memory:/kubepods/burstable/pod{UID}/{CID}\n"
        f"4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        "0::/\n", CgroupPod(UID, CID)),
    "v1 cgroupfs docker besteffort": (
        f"11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}\n10:devices:/kubepods/besteffort/pod{UID}/{CID}\n",
        CgroupPod(UID, CID)),
    "v1 cgroupfs guaranteed (no class directory)": (f"7:memory:/kubepods/pod{UID}/{CID}\n", CgroupPod(UID, CID)),
    "v1 systemd driver, one hierarchy placed": (
        "12:pids:/\n"
        "5:cpu:/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n"
        "1:name=systemd:/\n", CgroupPod(UID, CID)),
    "v2 systemd containerd burstable": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        CgroupPod(UID, CID)),
    "v2 systemd docker besteffort": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope\n",
        CgroupPod(UID, CID)),
    "v2 systemd cri-o guaranteed": (
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n", CgroupPod(UID, CID)),
    "v2 cri-o's monitor (conmon) in the pod: no container": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope\n",
        CgroupPod(UID, None)),
    "v2 seen from a cgroup namespace of our own": (
        f"0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n", CgroupPod(UID, CID)),
    "v2 kind node (kubelet nested in a container)": (
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n", CgroupPod(UID, CID)),
    "v2 cgroupfs driver": (f"0::/kubepods/burstable/pod{UID}/{CID}\n", CgroupPod(UID, CID)),
    "v2 a process in the pod's own cgroup": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice\n", CgroupPod(UID, None)),
    "host service": ("0::/system.slice/nginx.service\n", None),
    "login session": ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
    "docker container outside Kubernetes": (f"0::/system.slice/docker-{CID}.scope\n", None),
    "podman pod (not Kubernetes)": (f"0::/machine.slice/libpod-pod-{CID}.slice/libpod-{CID}.scope\n", None),
    "a unit named like a pod without a UID": ("0::/system.slice/podcast-sync.service\n", None),
    "root": ("0::/\n", None),
    "this machine's v1 memory hierarchy": (
        "9:name=systemd:/\n4:memory:/process_api/2100a06115437a287a658ebfdd721d6c\n0::/\n", None),
    "empty": ("", None),
}


@pytest.mark.parametrize("name", RECORDED)
def test_parse_cgroup_recorded(name):
    text, want = RECORDED[name]
    assert parse_cgroup(text) == want


def fake_process(proc: Path, pid: int, cgroup: str, environ: dict[str, str] | None = None,
                 net: str = "net:[4026532999]", namespace: str | None = "shop", var_run_link: bool = True) -> Path:
    """/proc/PID as the collector sees it: cgroup, environ, ns/net, and root/ with the service account volume."""
    d = proc / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in (environ or {}).items()))
    os.symlink(net, d / "ns" / "net")
    root = d / "root"
    (root / "var").mkdir(parents=True)
    run = root / "run" if var_run_link else root / "var" / "run"
    if var_run_link:  # Debian, Alpine...: /var/run -> /run, an absolute link
        os.symlink("/run", root / "var" / "run")
    if namespace is not None:
        # The kubelet's projected volume: namespace -> ..data/namespace -> ..2025_11_26.../namespace
        account = run / "secrets" / "kubernetes.io" / "serviceaccount"
        (account / "..2025_11_26_09_12_40.123").mkdir(parents=True)
        (account / "..2025_11_26_09_12_40.123" / "namespace").write_text(namespace)
        os.symlink("..2025_11_26_09_12_40.123", account / "..data")
        os.symlink("..data/namespace", account / "namespace")
    return d


@pytest.fixture
def proc(tmp_path):
    p = tmp_path / "proc"
    (p / "1" / "ns").mkdir(parents=True)
    os.symlink("net:[4026531840]", p / "1" / "ns" / "net")  # the host's network namespace
    return p


POD_CGROUP = ("0::/kubepods.slice/kubepods-burstable.slice/"
              f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n")


def test_pod_process_reads_the_namespace_inside_the_process_root_and_trusts_hostname_off_the_host_network(proc):
    fake_process(proc, 100, POD_CGROUP, {"PATH": "/bin", "HOSTNAME": "shop-api-7f9c", "HOME": "/"})
    got = pod_process(str(proc), 100, parse_cgroup(POD_CGROUP), "net:[4026531840]")
    assert got == PodProcess(UID, CID, "shop", "shop-api-7f9c")


def test_hostname_of_a_pod_on_the_host_network_is_the_node_and_is_not_taken(proc):
    fake_process(proc, 101, POD_CGROUP, {"HOSTNAME": "node-a"}, net="net:[4026531840]")
    got = pod_process(str(proc), 101, parse_cgroup(POD_CGROUP), "net:[4026531840]")
    assert got == PodProcess(UID, CID, "shop", None)


def test_without_a_service_account_or_hostname_what_is_known_stays(proc):
    fake_process(proc, 102, POD_CGROUP, {"PATH": "/bin"}, namespace=None, var_run_link=False)
    assert pod_process(str(proc), 102, parse_cgroup(POD_CGROUP), "net:[4026531840]") == PodProcess(UID, CID, None, None)


def test_a_real_var_run_directory_works_too(proc):
    fake_process(proc, 103, POD_CGROUP, namespace="payments", var_run_link=False)
    assert pod_process(str(proc), 103, parse_cgroup(POD_CGROUP), "net:[4026531840]").namespace == "payments"


def test_read_in_root_keeps_absolute_links_and_dotdot_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "name").write_text("inside")
    (tmp_path / "name").write_text("outside")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../name", root / "escape")
    assert read_in_root(str(root), "abs/name") == b"inside"
    with pytest.raises(FileNotFoundError):
        read_in_root(str(root), "escape")  # ".." stops at the root: root/name does not exist
    with pytest.raises(FileNotFoundError):
        read_in_root(str(root), "missing")
    assert read_in_root(str(root), "/etc/name", limit=3) == b"ins"


def test_environ_value(proc):
    fake_process(proc, 104, "0::/\n", {"HOSTNAME": "a=b", "X": "1"})
    assert environ_value(str(proc), 104, "HOSTNAME") == "a=b"
    assert environ_value(str(proc), 104, "HOST") is None
    assert environ_value(str(proc), 999, "HOSTNAME") is None


def test_the_host_network_is_init_s_else_our_own(tmp_path):
    from akto_collector.supervisor.podmeta import host_net_namespace

    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink("net:[111]", proc / "self" / "ns" / "net")
    assert host_net_namespace(str(proc)) == "net:[111]"  # init's cannot be read (a sandbox's pid 1 may refuse)
    (proc / "1" / "ns").mkdir(parents=True)
    os.symlink("net:[4026531840]", proc / "1" / "ns" / "net")
    assert host_net_namespace(str(proc)) == "net:[4026531840]"
