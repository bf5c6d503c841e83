"""The CLI's contract: exit codes and one-line configuration errors."""

import os
import subprocess
import sys

import pytest

BAD = {
    "TRAFFIC_INACTIVITY_THRESHOLD": "soon",
    "TRAFFIC_MAX_ACTIVE_CONN": "-1",
    "TRAFFIC_DISABLE_EGRESS": "maybe",
    "AKTO_MEM_THRESH_RESTART": "lots",
    "TRAFFIC_BUFFER_THRESHOLD": "0",
    "AKTO_IGNORE_IP_TRAFFIC": "2",
    "AKTO_IGNORE_CLOUD_METADATA_CALLS": "nope",
    "KAFKA_POLL_INTERVAL": "-0.5",
    "UPROBE_POLL_INTERVAL": "five",
    "CAPTURE_ALL": "yes please",
    "CAPTURE_SSL": "t",
    "PROBE_ALL_PID": "all",
    "AKTO_MODULE_DISCOVERY_CONFIG": '[{"key":{"eq":"x"},"value":{"regex":"("}}]',
    "AKTO_KAFKA_BROKER_MAL": "host:notaport",
    "AKTO_NLB_IP": "bad host:1:2",
    "AKTO_WORKERS": "0",
}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AKTO_", "TRAFFIC_", "CAPTURE_", "KAFKA_", "PROBE_ALL", "UPROBE_"))}
    env.update(extra)
    return env


@pytest.mark.parametrize("name,value", sorted(BAD.items()))
def test_bad_value_exits_2_with_one_line(name, value):
    r = subprocess.run([sys.executable, "-m", "akto_collector", "run"], env=clean_env(**{name: value}),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0]
    assert r.stdout == ""


def test_version_and_help():
    r = subprocess.run([sys.executable, "-m", "akto_collector", "version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()
    for args in (["--help"], ["run", "--help"], ["version", "--help"]):
        r = subprocess.run([sys.executable, "-m", "akto_collector", *args], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout


def test_dump_bpf_prints_program():
    r = subprocess.run([sys.executable, "-m", "akto_collector", "run", "--dump-bpf"], env=clean_env(),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert "SOCK_DATA(sock, sock_recv_length)" in r.stdout
    assert "-DMAX_CONN=4096" in r.stdout
