"""The three ways the collector is deployed, checked with the real tools:
the DaemonSet (k8s/akto-daemonset-config.yaml) against the Kubernetes schema
(kubernetes-validate, offline) and against the configuration table and the
seed guide; the image (Dockerfile) with hadolint, and its system packages
against scripts/setup-system.sh; the systemd unit with systemd-analyze, as
`make install-files` installs it, and its environment file against the table.

The image's package install itself (`pip install .`, not editable, compiled)
is tests/integration/test_install.py's.
"""

from __future__ import annotations

import configparser
import mmap
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from akto_collector import __version__, exits
from akto_collector.config import (
    HOST_MACHINE_ID_PATH,
    KNOWN_VARIABLES,
    VARIABLES,
    ConfigError,
    Settings,
    read_env_file,
    unknown_variables,
)
from akto_collector.kernel import headers
from akto_collector.kernel.loader import ProbeOptions
from akto_collector.supervisor.arbiter import HOUSEKEEPING_SECONDS

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "k8s" / "akto-daemonset-config.yaml"
DOCKERFILE = REPO / "Dockerfile"
SETUP_SCRIPT = "scripts/setup-system.sh"
UNIT = REPO / "packaging" / "akto-collector.service"
ENV_FILE = REPO / "packaging" / "akto-collector.env"
# Akto's DaemonSet guide, the variables and values existing manifests carry
# (a recorded copy: a clone must test without anything beside it).
SEED = REPO / "tests" / "data" / "akto-daemonset-guide.txt"
# The schema version the manifest is written for (appArmorProfile is 1.30's).
KUBERNETES_VERSION = "1.30.0"
# What the collector needs beyond an unprivileged root (the manifest's comments say why).
CAPABILITIES = {"BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE", "SYS_NICE"}
# The kernel memory charged to the collector besides the ring buffer: its
# maps with the default limits (probes/common.h), 34 MiB by bpftool's
# memlock figures, with room.
MAPS_BYTES = 40 << 20
MiB = 1 << 20
# What the downward API gives the pod, for expanding $(VAR) references.
DOWNWARD = {"spec.nodeName": "node-a", "metadata.name": "akto-collector-x1",
            "metadata.namespace": "akto", "status.hostIP": "10.1.2.3"}
SETTINGS_MACHINE = {"machine_id_paths": (), "hostname": "test-host", "cpu_count": 4}


def tool(name: str) -> str:
    """A test tool: from this venv (PyPI) or the system (make test-deps installs both)."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test-deps`")
    return found


def variable(name: str):
    return next(v for v in VARIABLES if v.name == name)


# --- the DaemonSet ---------------------------------------------------------


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


@pytest.fixture(scope="module")
def pod(documents) -> dict:
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    return ds["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (c,) = pod["spec"]["containers"]
    return c


def seed_variables() -> list[tuple[list[str], str, str]]:
    """(comment lines, name, value as Kubernetes would pass it) of each variable of the guide."""
    lines = SEED.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.fullmatch(r"- name: (\w+)", line.strip())
        if not m:
            continue
        comments = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            comments.insert(0, lines[j])
            j -= 1
        value = yaml.safe_load(lines[i + 1].strip())["value"]
        out.append((comments, m.group(1), str(value)))
    return out


def expanded_env(container: dict, **override: str) -> dict[str, str]:
    """The environment the collector starts with: values and downward-API
    fields, with Kubernetes' $(VAR) expansion of the variables defined before."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = DOWNWARD[item["valueFrom"]["fieldRef"]["fieldPath"]]
            continue
        value = re.sub(r"\$\$|\$\(([A-Za-z_]\w*)\)",
                       lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), item["value"])
        env[item["name"]] = override.get(item["name"], value)
    return env


def test_every_document_is_valid_against_the_kubernetes_schema(documents):
    assert {d["kind"] for d in documents} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
    for doc in documents:
        # strict: an unknown (misspelt) field is an error too; a bare number as an env value is one.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_variable_of_the_guide_is_there_with_its_comment_and_value(container):
    text = MANIFEST.read_text().splitlines()
    env = {item["name"]: item.get("value") for item in container["env"]}
    seeded = seed_variables()
    assert "UPROBE_POLL_INTERVAL" in {name for _, name, _ in seeded}  # the guide's bare `value: 5`
    for comments, name, value in seeded:
        assert env[name] == value, name  # the guide's bare `5` arrives as the string "5"
        (at,) = [i for i, line in enumerate(text) if line.strip() == f"- name: {name}"]
        above = []
        for line in reversed(text[:at]):
            if not line.strip().startswith("#"):
                break
            above.insert(0, line.strip())
        assert all(c in above for c in comments), (name, comments, above)
        # The value is quoted in the file, not a YAML number Kubernetes would refuse.
        assert re.fullmatch(r"""value: (".*"|'.*')""", text[at + 1].strip()), text[at + 1]
    # The placeholders the guide has the user fill in.
    assert env["AKTO_NLB_IP"] == "<AKTO_NLB_IP>" and env["AKTO_MONGO_CONN"] == "<AKTO_MONGO_CONN>"
    assert env["AKTO_KAFKA_BROKER_MAL"] == ""  # empty: unset, AKTO_NLB_IP is used
    assert env["AKTO_K8_METADATA_CAPTURE"] == "false"


def test_every_variable_set_is_one_the_collector_knows(container):
    literal = [item["name"] for item in container["env"] if "valueFrom" not in item]
    assert set(literal) <= KNOWN_VARIABLES, sorted(set(literal) - KNOWN_VARIABLES)
    # The downward-API helpers the collector does not read (POD_NAMESPACE,
    # NODE_IP) must not look like its variables either: no warning at start.
    names = [item["name"] for item in container["env"]]
    assert unknown_variables(dict.fromkeys(names, "")) == []
    assert len(names) == len(set(names))


def test_settings_load_from_the_environment_kubernetes_gives(container):
    env = expanded_env(container) | {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    # The placeholder left as is refuses to start, naming it.
    with pytest.raises(ConfigError, match=r"^AKTO_NLB_IP='<AKTO_NLB_IP>'"):
        Settings.from_env(env, **SETTINGS_MACHINE)
    s = Settings.from_env(env | {"AKTO_NLB_IP": "10.0.0.12"}, **SETTINGS_MACHINE)
    assert s.metrics_addr == f"{DOWNWARD['status.hostIP']}:9464"  # $(NODE_IP) expanded: defined before
    assert s.node_name == DOWNWARD["spec.nodeName"] and s.pod_name == DOWNWARD["metadata.name"]
    assert s.probe_all_pid is False and s.uprobe_poll_interval == 300.0
    assert s.kafka_brokers == ("10.0.0.12:9092",)


def test_probes_and_scrape_reach_the_endpoints_where_they_listen(pod, container):
    env = expanded_env(container)
    port = int(env["AKTO_METRICS_ADDR"].rsplit(":", 1)[1])
    assert port == int(variable("AKTO_METRICS_ADDR").default.rsplit(":", 1)[1])  # the collector's default port
    (named,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    assert pod["spec"]["hostNetwork"] is True  # the kubelet probes the pod's IP: the node's, where it binds
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert probes["startupProbe"]["path"] == probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # the programs compile first
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == port


def test_least_privilege_security_context(pod, container):
    spec = pod["spec"]
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    sc = container["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 0 and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES and len(sc["capabilities"]["add"]) == len(CAPABILITIES)


def test_host_paths_are_read_only_and_where_the_collector_reads_them(pod, container):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug", "/lib/modules", "/usr/src"):
        # The same path inside: the build links under /lib/modules are absolute.
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    assert volumes[mounts[HOST_MACHINE_ID_PATH]["name"]]["hostPath"]["path"] == "/etc/machine-id"
    for m in mounts.values():
        if "hostPath" in volumes[m["name"]]:
            assert m.get("readOnly") is True, m
    # The image's own headers are not under a host mount that would hide them.
    image_headers = image_headers_dir()
    assert not any(str(image_headers).startswith(path + "/") for path in mounts)


def kernel_side_bytes(settings: Settings) -> int:
    """What the kernel charges to the collector's cgroup that is not its private memory."""
    return ProbeOptions.from_settings(settings).ringbuf_pages * mmap.PAGESIZE + MAPS_BYTES


def test_memory_limit_covers_the_threshold_and_the_kernel_side(container):
    s = Settings.from_env(expanded_env(container, AKTO_NLB_IP="10.0.0.12"), **SETTINGS_MACHINE)
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    assert int(limit[:-2]) * MiB >= s.mem_thresh_restart_bytes + kernel_side_bytes(s)
    assert "cpu" not in container["resources"]["limits"]  # a throttled drain overflows the ring buffer


def test_metadata_rbac_and_scheduling(documents, pod, container):
    by_kind = {d["kind"]: d for d in documents}
    spec = pod["spec"]
    sa = by_kind["ServiceAccount"]["metadata"]["name"]
    assert spec["serviceAccountName"] == sa and spec["automountServiceAccountToken"] is True
    (rule,) = by_kind["ClusterRole"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    binding = by_kind["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == by_kind["ClusterRole"]["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["name"] == sa
    assert subject["namespace"] == "<NAMESPACE>"  # the one `kubectl apply -n <NAMESPACE>` names
    assert "kubectl apply -f k8s/akto-daemonset-config.yaml -n <NAMESPACE>" in MANIFEST.read_text()
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert expanded_env(container)["AKTO_IMAGE_VERSION"] == container["image"]


# --- the image -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments left out."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            out.append([])
        out[-1].append((word, rest))
    return out


def image_headers_dir() -> Path:
    (arg,) = [re.search(rf"{SETUP_SCRIPT.rsplit('/', 1)[1]} --image-build (\S+)", rest).group(1)
              for word, rest in dockerfile_instructions() if word == "RUN" and "--image-build" in rest]
    return Path(arg)


def test_dockerfile_lints_clean():
    r = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], check=False, capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_image_and_host_get_their_system_packages_from_the_same_script():
    build, final = stages()
    for stage, mode in ((build, "--image-build"), (final, "--image")):
        assert ("COPY", f"{SETUP_SCRIPT} /tmp/") in stage
        assert any(word == "RUN" and f"setup-system.sh {mode}" in rest for word, rest in stage), mode
        for word, rest in stage:
            # No package manager of its own: a package the image needs goes in the script.
            assert not (word == "RUN" and re.search(r"\b(apt-get|apt|dpkg|aptitude)\b", rest)), rest
    # make setup runs the same script (its host mode).
    assert f"bash {SETUP_SCRIPT}\n" in (REPO / "Makefile").read_text()


def test_image_carries_what_the_package_build_reads_and_runs_it():
    copied = set()
    for word, rest in stages()[0]:
        if word == "COPY" and not rest.startswith("--"):
            copied.update(Path(p).name for p in rest.split()[:-1])
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    long_description = cfg["metadata"]["long_description"].removeprefix("file:").strip()
    assert {"setup.py", "setup.cfg", "pyproject.toml", long_description, "probes", "akto_collector"} <= copied
    final = dict(stages()[1])
    assert final["ENTRYPOINT"] == '["akto-collector"]' and final["CMD"] == '["run"]'
    assert ("COPY", "--from=build /opt/akto-collector /opt/akto-collector") in stages()[1]


def test_image_labels():
    final = stages()[1]
    args = dict(rest.split("=", 1) for word, rest in final if word == "ARG")
    assert args["VERSION"] == __version__
    (labels,) = [rest for word, rest in final if word == "LABEL"]
    found = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', labels))
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert found["org.opencontainers.image.title"] == cfg["metadata"]["name"]
    assert found["org.opencontainers.image.description"].startswith(cfg["metadata"]["description"].split(":")[0])
    assert found["org.opencontainers.image.licenses"] == cfg["metadata"]["license"]
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert "org.opencontainers.image.source" in found


def test_image_kernel_headers_are_where_the_collector_looks_and_compile(tmp_path):
    """The build stage's header trees, made by the script itself here (it installs
    nothing when make setup has run), are found by kernel/headers.py and
    compile a program with bcc through BCC_KERNEL_SOURCE alone."""
    target = image_headers_dir()
    assert target in headers.HEADER_ROOTS and target != Path("/usr/src")
    out = tmp_path / "kernel-headers"
    r = subprocess.run(["bash", str(REPO / SETUP_SCRIPT), "--image-build", str(out)], check=False,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    trees = sorted(out.iterdir())
    assert trees and all(t.name.endswith("-amd64") for t in trees)
    for t in trees:
        assert (t / "include/linux/kconfig.h").is_file() and (t / "include/generated/autoconf.h").is_file()
        assert not any(os.path.lexists(t / link) for link in ("scripts", "tools"))  # links into linux-kbuild
    found = headers.find_kernel_headers("6.1.0-99-amd64", modules=tmp_path / "no-modules", roots=(out,))
    assert found.kind == "nearest" and found.source == found.build and found.source.parent == out
    if os.geteuid() != 0:
        pytest.skip("bcc needs root to build a module")
    program = ("#include <uapi/linux/ptrace.h>\n#include <linux/socket.h>\n#include <linux/in6.h>\n"
               "#include <linux/uio.h>\n"
               "int f(void *ctx) { return sizeof(struct iovec) + sizeof(struct sockaddr_in6); }")
    r = subprocess.run(["/usr/bin/python3", "-c", f"from bcc import BPF; BPF(text={program!r})"],
                       env=dict(os.environ, **found.environ()), check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# --- systemd ---------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def install_files(destdir: Path, **variables: str) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in {"DESTDIR": str(destdir), **variables}.items()]
    return subprocess.run(["make", "-s", "install-files", *args], cwd=REPO, check=False, capture_output=True,
                          text=True, timeout=60)


def test_installed_unit_verifies(tmp_path):
    # PREFIX at this checkout: ExecStart is then its venv's real akto-collector,
    # which systemd-analyze checks is there.
    r = install_files(tmp_path, PREFIX=str(REPO))
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "etc/systemd/system/akto-collector.service"
    assert unit_settings(unit)["ExecStart"] == [f"{REPO}/.venv/bin/akto-collector run"]
    r = subprocess.run([tool("systemd-analyze"), "verify", "--man=no", str(unit)], check=False,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_install_keeps_an_existing_environment_file(tmp_path):
    r = install_files(tmp_path, PREFIX="/srv/ac", CONFDIR="/etc/ac")
    assert r.returncode == 0, r.stderr
    unit, env = tmp_path / "etc/systemd/system/akto-collector.service", tmp_path / "etc/ac/env"
    assert env.read_text() == ENV_FILE.read_text()
    assert oct(env.stat().st_mode & 0o777) == "0o600"  # it may hold KAFKA_PASSWORD
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    settings = unit_settings(unit)
    assert settings["ExecStart"] == ["/srv/ac/.venv/bin/akto-collector run"]
    assert settings["Environment"] == ["AKTO_ENV_FILE=/etc/ac/env"]
    env.write_text("AKTO_NLB_IP=10.0.0.12\n")
    r = install_files(tmp_path, PREFIX="/srv/ac", CONFDIR="/etc/ac")
    assert r.returncode == 0 and "kept" in r.stdout, r.stderr
    assert env.read_text() == "AKTO_NLB_IP=10.0.0.12\n"


def test_unit_speaks_the_collectors_protocols():
    s = {k: v[-1] for k, v in unit_settings(UNIT).items()}
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["ExecStart"] == "/opt/akto-collector/.venv/bin/akto-collector run"
    assert s["Environment"] == "AKTO_ENV_FILE=/etc/akto-collector/env"  # read at start and on reload
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "EnvironmentFile" not in s  # one reader of the file: the collector
    # Pinged at half the interval, from a loop that publishes once a second.
    assert int(s["WatchdogSec"].removesuffix("s")) / 2 > 2 * HOUSEKEEPING_SECONDS
    assert s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == str(exits.CONFIG)
    assert s["KillMode"] == "mixed"  # the supervisor stops its workers itself
    assert "MemoryDenyWriteExecute" not in s  # bcc's LLVM
    defaults = Settings.from_env({}, **SETTINGS_MACHINE)
    assert s["MemoryMax"].endswith("M")
    assert int(s["MemoryMax"][:-1]) * MiB >= defaults.mem_thresh_restart_bytes + kernel_side_bytes(defaults)
    caps = set(s["CapabilityBoundingSet"].split())
    assert {f"CAP_{c}" for c in CAPABILITIES} <= caps and "CAP_SYS_ADMIN" not in caps


def test_environment_file_is_made_from_the_table():
    r = subprocess.run([sys.executable, str(REPO / "packaging" / "env_file.py")], check=False,
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ENV_FILE.read_text() == r.stdout, "packaging/akto-collector.env is stale: run `make env-file`"


def test_environment_file_names_only_known_variables_with_their_defaults():
    assert read_env_file(str(ENV_FILE)) == {}  # all commented out: the defaults apply
    lines = re.findall(r"^#([A-Z][A-Z0-9_]*)=(.*)$", ENV_FILE.read_text(), re.MULTILINE)
    names = [name for name, _ in lines]
    assert names and set(names) <= KNOWN_VARIABLES and len(names) == len(set(names))
    defaults = Settings.from_env({}, **SETTINGS_MACHINE)
    for name, value in lines:
        if value:  # uncommented as it stands, it changes nothing
            field = variable(name).field
            got = Settings.from_env({name: value}, **SETTINGS_MACHINE)
            assert getattr(got, field) == getattr(defaults, field), (name, value)
