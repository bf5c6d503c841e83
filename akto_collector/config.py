"""Settings of the collector: one table of variables, read once from the environment.

``VARIABLES`` is the single statement of every setting: its environment
name, the ``Settings`` field it fills, how its text is read (type, bounds,
unit), its default, what it means, and where it acts. Everything else is
made from it: the ``Settings`` dataclass and its defaults, ``from_env``,
the error messages, ``KNOWN_VARIABLES``, and the tables of
docs/configuration.md (``python -m akto_collector.config --markdown``; a
unit test keeps the file equal to it).

``Settings.from_env(os.environ)`` returns a frozen, picklable ``Settings``
(the supervisor hands it to the workers) or raises ``ConfigError`` at the
first bad value; its text is one line naming the variable, the value as
given and what is expected. The CLI prints it and exits 2.

Conventions: surrounding whitespace is ignored and an empty value counts as
unset (Kubernetes manifests often carry ``value: ""``); booleans take
true/false/1/0/yes/no/on/off in any case; numbers are plain decimals (no
NaN, no infinity, no sign other than ``+``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from akto_collector import __version__
from akto_collector.addresses import parse_host_port, parse_host_port_list
from akto_collector.filters import parse_discovery_config
from akto_collector.tags import parse_inject_tags

MAX_WORKERS = 64
# The connection limit also sizes kernel maps; beyond this a typo (an extra
# zero or three) would fail at probe load with an obscure error instead of here.
MAX_ACTIVE_CONN_LIMIT = 1 << 20
KAFKA_DEFAULT_PORT = 9092
# Producer compression -> the Python module kafka-python needs for it.
KAFKA_COMPRESSION_MODULES = {"none": None, "gzip": None, "lz4": "lz4.frame", "snappy": "snappy", "zstd": "zstandard"}
KAFKA_COMPRESSIONS = tuple(KAFKA_COMPRESSION_MODULES)
LOG_LEVELS = ("debug", "info", "warning", "error")

# Inside Kubernetes the container's own /etc/machine-id belongs to the image
# (identical on every node, or absent), so only the host's, mounted by the
# DaemonSet at /host/etc/machine-id, is trusted there.
HOST_MACHINE_ID_PATH = "/host/etc/machine-id"
DEFAULT_MACHINE_ID_PATHS = (HOST_MACHINE_ID_PATH, "/etc/machine-id")

_CHECKED_PREFIXES = ("AKTO_", "TRAFFIC_")
# Set by the collector itself for the image it execs into (supervisor/reexec.py).
STATE_VARIABLE = "AKTO_COLLECTOR_STATE"
INTERNAL_VARIABLES = frozenset({STATE_VARIABLE})
# Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT_9092_TCP, ... for
# every Service in the namespace; a Service named "akto-..." is no typo of ours.
_SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_WHOLE = re.compile(r"\+?[0-9]+")
_DECIMAL = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_MONGO_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


class ConfigError(Exception):
    """A bad setting. ``str()`` is one line: the variable, its value, what is expected."""


# --- how a value is read ---------------------------------------------------


class Reader:
    """Turns a variable's text into a value; ``ValueError(expected)`` when it cannot."""

    accepted = ""  # for the docs: what values are accepted
    strip = True  # surrounding whitespace ignored, empty means unset

    def read(self, raw: str) -> Any:
        raise NotImplementedError


class Boolean(Reader):
    accepted = "boolean"

    def read(self, raw: str) -> bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


class Whole(Reader):
    def __init__(self, minimum: int, maximum: int | None = None, unit: str = "") -> None:
        self.minimum, self.maximum, self.unit = minimum, maximum, unit
        of = f" of {unit}" if unit else ""
        if maximum is not None:
            self.expected = f"expected a whole number{of} from {minimum} to {maximum}"
            self.accepted = f"whole number, {minimum} to {maximum}"
        elif minimum == 1:
            self.expected = f"expected a positive whole number{of}"
            self.accepted = f"positive whole number{of}"
        else:
            self.expected = f"expected a whole number{of}, {minimum} or more"
            self.accepted = f"whole number, {minimum} or more"

    def read(self, raw: str) -> int:
        value = int(raw) if _WHOLE.fullmatch(raw) else None
        if value is None or value < self.minimum or (self.maximum is not None and value > self.maximum):
            raise ValueError(self.expected)
        return value


class Positive(Reader):
    """A positive decimal in ``unit``, stored multiplied by ``scale`` (minutes as seconds)."""

    def __init__(self, unit: str, scale: float = 1.0) -> None:
        self.unit, self.scale = unit, scale
        self.accepted = f"positive number of {unit}"

    def read(self, raw: str) -> float:
        value = float(raw) if _DECIMAL.fullmatch(raw) else None
        if value is None or not 0.0 < value < float("inf"):
            raise ValueError(f"expected a positive number of {self.unit}")
        return value * self.scale


class Choice(Reader):
    def __init__(self, choices: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        self.choices, self.aliases = tuple(choices), dict(aliases or {})
        self.accepted = ", ".join(f"`{c}`" for c in self.choices) + " (any case)"

    def read(self, raw: str) -> str:
        low = raw.lower()
        low = self.aliases.get(low, low)
        if low not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}")
        return low


class Text(Reader):
    accepted = "any"

    def read(self, raw: str) -> str:
        return raw


class Secret(Text):
    """Taken exactly as given (a password may start or end with a space); never shown."""

    strip = False


class Parsed(Reader):
    """A value read by ``parse``, whose ValueError text is the expectation
    (or ``expected`` when given)."""

    def __init__(self, parse: Callable[[str], Any], accepted: str, expected: str | None = None) -> None:
        self.parse, self.accepted, self.expected = parse, accepted, expected

    def read(self, raw: str) -> Any:
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ValueError(self.expected or str(exc)) from None


# --- computed defaults -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Machine:
    """What defaults depend on besides the environment (replaced in tests)."""

    in_kubernetes: bool = False
    hostname: str = ""
    cpu_count: int = 1
    machine_id_paths: tuple[str, ...] = ()
    node_name: str = ""  # NODE_NAME, or the host name


@dataclasses.dataclass(frozen=True)
class Computed:
    """A default computed from the machine; ``doc`` says how, for the docs."""

    compute: Callable[[Machine], Any]
    doc: str


def usable_cpus() -> int:
    """CPUs this process may use: its affinity (which honours cpusets), and
    no more than its cgroup's CPU quota rounded up (a DaemonSet's
    ``limits.cpu: 500m`` gives one worker: more would only be throttled)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    from akto_collector import cgroups  # noqa: PLC0415 (reads /sys only here)

    quota = cgroups.cpu_quota(cgroups.own_dirs("cpu"))
    return max(1, min(n, math.ceil(quota))) if quota else n


def default_workers(cpu_count: int | None = None) -> int:
    return min(MAX_WORKERS, max(1, usable_cpus() if cpu_count is None else cpu_count))


def default_daemonset_id(machine_id_paths: Sequence[str], fallback: str) -> str:
    """A stable id for this host: the first 16 hex digits of a SHA-256 of its
    machine id (the first readable, initialised one of ``machine_id_paths``),
    else of ``fallback`` (the node name)."""
    source = fallback
    for path in machine_id_paths:
        try:
            with open(path, encoding="ascii") as fh:
                machine_id = fh.read(256).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if machine_id and machine_id != "uninitialized":
            source = machine_id
            break
    # Hashed with a prefix of our own: the machine id itself is meant to stay
    # private (machine-id(5)), and the result then means nothing elsewhere.
    return hashlib.sha256(b"akto-collector:" + source.encode()).hexdigest()[:16]


# --- value parsers -----------------------------------------------------------


def _digits(raw: str) -> str:
    # Akto keeps these ids as integers; the message carries them as strings.
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError("expected a whole number")
    return raw


def _topic(raw: str) -> str:
    if not _TOPIC.fullmatch(raw) or raw in (".", ".."):
        raise ValueError("expected a Kafka topic name (up to 249 of A-Z a-z 0-9 . _ -)")
    return raw


def _readable_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError("expected the path of an existing file (a CA bundle in PEM)")
    if not os.access(raw, os.R_OK):
        raise ValueError("expected a file this process can read")
    return raw


def _broker_list(raw: str) -> tuple[str, ...]:
    brokers = parse_host_port_list(raw)
    if not brokers:
        raise ValueError("expected host:port[,host:port...]")
    return brokers


def _nlb(raw: str) -> tuple[str, ...]:
    return (parse_host_port(raw, KAFKA_DEFAULT_PORT),)


def _listen_address(raw: str) -> str:
    return parse_host_port(raw, None)


def _env_file(raw: str) -> str:
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ValueError("expected the path of a readable file of VARIABLE=value lines")
    read_env_file(raw)  # its lines must be readable too
    return raw


def read_env_file(path: str) -> dict[str, str]:
    """Variables of an environment file, as systemd's EnvironmentFile= and a
    ConfigMap mounted as a file write them: ``NAME=value`` lines, ``#`` or ``;``
    comments, blank lines, a value optionally in single or double quotes.
    Raises ValueError naming the line that is none of these."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text[0] in "#;":
                continue
            name, sep, value = text.partition("=")
            name = name.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{path}:{number}: expected NAME=value")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[name] = value
    return out


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 token)


def _header_names(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    bad = [n for n in names if not _TOKEN.fullmatch(n)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a header name; expected header names separated by commas")
    return names


def _json_keys(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k.strip().lower() for k in raw.split(",") if k.strip()))


def _ring_mb(raw: str) -> int:
    n = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= n <= 1024 or n & (n - 1):
        raise ValueError("expected a power of two from 1 to 1024 (MB)")
    return n


def _compression(raw: str) -> str:
    name = Choice(KAFKA_COMPRESSIONS).read(raw)
    module = KAFKA_COMPRESSION_MODULES[name]
    if module is not None and importlib.util.find_spec(module.partition(".")[0]) is None:
        usable = ", ".join(n for n, m in KAFKA_COMPRESSION_MODULES.items()
                           if m is None or importlib.util.find_spec(m.partition(".")[0]) is not None)
        raise ValueError(f"needs the Python package {module.partition('.')[0]}, which is not installed; "
                         f"expected one of {usable}")
    return name


# --- the table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variable:
    """One setting. ``default`` is in the stored form (seconds, bytes...)."""

    name: str  # the environment variable
    field: str  # the Settings attribute it fills
    reader: Reader
    default: Any  # a value, or Computed
    doc: str
    section: str
    enforced: str  # which stage acts on it
    default_doc: str = ""  # the default as the docs show it, when not simply the value
    secret: bool = False
    empty: Any = None  # the value of an empty setting when it is not the default (None: the default)


CAPTURE, LIMITS, OUTPUT, IDENTITY, OPERATION = (
    "What is captured", "Limits", "Where the traffic goes", "Identity and message fields", "Operation")

VARIABLES: tuple[Variable, ...] = (
    # What is captured
    Variable("AKTO_MODULE_DISCOVERY_CONFIG", "discovery_rules",
             Parsed(parse_discovery_config, "JSON list of rules"), (),
             "Header rules a request must pass to be sent; see [Discovery rules](#discovery-rules).",
             CAPTURE, "`filters.PairFilter`, in the worker; drop reason `filter.discovery`",
             default_doc="none: everything passes"),
    Variable("CAPTURE_ALL", "capture_all", Boolean(), True,
             "Capture plaintext socket traffic: what SSL termination at a proxy/service (or no TLS at all) "
             "leaves in clear.", CAPTURE, "kernel (which programs are loaded)"),
    Variable("CAPTURE_SSL", "capture_ssl", Boolean(), True,
             "Capture TLS traffic at the application's TLS library (uprobes on `SSL_read`/`SSL_write`, ...). "
             "With `CAPTURE_ALL=false` only this traffic is captured. `CAPTURE_ALL` and `CAPTURE_SSL` both "
             "false is an error.", CAPTURE, "kernel, supervisor (uprobes)"),
    Variable("TRAFFIC_DISABLE_EGRESS", "disable_egress", Boolean(), False,
             "Drop calls the traced processes make (client side, message direction `2`); keep only the "
             "requests they serve. The guide recommends keeping it false.", CAPTURE, "kernel and worker"),
    Variable("AKTO_IGNORE_IP_TRAFFIC", "ignore_ip_traffic", Boolean(), False,
             "Drop requests whose host is an IP literal: `10.0.0.1`, `10.0.0.1:80`, `[fd00::1]:8080`.",
             CAPTURE, "`filters.PairFilter`; drop reason `filter.ip_host`"),
    Variable("AKTO_IGNORE_CLOUD_METADATA_CALLS", "ignore_cloud_metadata", Boolean(), False,
             "Drop calls to the cloud instance-metadata service: host or peer `169.254.169.254`, "
             "`fd00:ec2::254` or `metadata.google.internal` (any port).",
             CAPTURE, "`filters.PairFilter`; drop reason `filter.cloud_metadata`"),
    Variable("PROBE_ALL_PID", "probe_all_pid", Boolean(), Computed(lambda m: not m.in_kubernetes,
             "`true` outside Kubernetes, `false` inside (inside: `KUBERNETES_SERVICE_HOST` is set)"),
             "Probe the TLS libraries of every process of the host; false: only of processes in containers. "
             "The guide: set it true when running outside Kubernetes.", CAPTURE, "supervisor (uprobes)"),
    Variable("UPROBE_POLL_INTERVAL", "uprobe_poll_interval", Positive("minutes", 60.0), 300.0,
             "Minutes between scans of the running processes for new TLS libraries to probe (an exec also "
             "triggers a scan). Stored in seconds.", CAPTURE, "supervisor (uprobes)", default_doc="`5` minutes"),
    Variable("AKTO_MAX_BODY_BYTES", "max_body_bytes", Whole(0, unit="bytes"), 1 << 20,
             "Bytes of a request or response body kept; the rest is cut and the message marked.",
             CAPTURE, "protocols (`CoreLimits`)", default_doc="`1048576` (1 MiB)"),
    Variable("AKTO_SOCK_TRACEPOINTS", "sock_tracepoints", Choice(("auto", "on", "off")), "auto",
             "Where plaintext socket data is taken: `auto` uses the `sock:sock_{send,recv}_length` "
             "tracepoints when the kernel has them (Linux 6.3+; calls on files and pipes then cost nothing) "
             "and the read/write syscall tracepoints otherwise (every read and write pays a little; "
             "connections opened before the collector are taken when their data starts like HTTP); `off` "
             "forces the syscall path; `on` refuses to start without the tracepoints (exit 3).",
             CAPTURE, "kernel (which programs are attached)"),
    # Limits
    Variable("TRAFFIC_INACTIVITY_THRESHOLD", "inactivity_threshold", Positive("seconds"), 30.0,
             "Seconds without bytes after which a connection is finished and forgotten; a late byte starts "
             "a new stream.", LIMITS, "worker, kernel table expiry"),
    Variable("TRAFFIC_MAX_ACTIVE_CONN", "max_active_conn", Whole(1, MAX_ACTIVE_CONN_LIMIT), 4096,
             "Connections tracked at once (also the size of the kernel connection map). Beyond it, idle "
             "ones expire first, then new ones are refused and counted.", LIMITS, "kernel maps, worker"),
    Variable("TRAFFIC_BUFFER_THRESHOLD", "buffer_threshold_mb", Whole(1, unit="MB"), 600,
             "MB of traffic held at once: records queued for the workers, their stream buffers and the "
             "sink's queue together; beyond it the oldest is dropped and counted.", LIMITS,
             "supervisor (queues), worker, sinks"),
    Variable("AKTO_RING_BUFFER_MB", "ring_buffer_mb", Parsed(_ring_mb, "power of two from 1 to 1024 (MB)"), 64,
             "MB of the kernel's ring buffer, where records wait for the supervisor. Charged to the pod's "
             "memory cgroup (not to any process's RSS). When it fills past half, new connections are shed "
             "(tracked, counted, not copied) until it drains below a quarter.", LIMITS,
             "kernel (map size), supervisor (shedding)"),
    Variable("AKTO_MEM_THRESH_RESTART", "mem_thresh_restart_mb", Whole(1, unit="MB"), 800,
             "MB of memory (private memory of supervisor and workers) beyond which the collector flushes, "
             "detaches and restarts itself. Keep the container's memory limit above it.",
             LIMITS, "supervisor (memory guard)"),
    Variable("AKTO_WORKERS", "workers", Whole(1, MAX_WORKERS), Computed(lambda m: default_workers(m.cpu_count),
             f"CPUs this process may use (its affinity, and its cgroup's CPU quota rounded up), at most "
             f"{MAX_WORKERS}"),
             "Worker processes (each owns a shard of the connections).", LIMITS, "supervisor"),
    # Where the traffic goes
    Variable("AKTO_KAFKA_BROKER_MAL", "kafka_brokers", Parsed(_broker_list, "`host:port[,host:port...]`; IPv6 as "
             "`[addr]:port`; port 1-65535; no scheme"), (),
             "Kafka bootstrap brokers. Wins over `AKTO_NLB_IP`. With neither set, each message is written "
             "to stdout as one JSON line.", OUTPUT, "sinks", default_doc="unset"),
    Variable("AKTO_NLB_IP", "kafka_brokers", Parsed(_nlb, "`host` or `host:port` (port 9092 unless given); IPv6 "
             "as `[addr]`, `[addr]:port` or bare `addr`"), (),
             "The service IP or load balancer name of the Akto Traffic Processor. Used when "
             "`AKTO_KAFKA_BROKER_MAL` is unset.", OUTPUT, "sinks", default_doc="unset"),
    Variable("AKTO_KAFKA_TOPIC", "kafka_topic", Parsed(_topic, "Kafka topic name: 1-249 of `A-Z a-z 0-9 . _ -`"),
             "akto.api.logs", "Topic of the traffic messages.", OUTPUT, "sinks"),
    Variable("AKTO_KAFKA_COMPRESSION", "kafka_compression",
             Parsed(_compression, "`none`, `gzip`, `lz4`, `snappy`, `zstd` (any case; snappy needs "
                    "python-snappy installed)"),
             "lz4", "Producer compression.", OUTPUT, "sinks"),
    Variable("KAFKA_POLL_INTERVAL", "kafka_poll_interval", Positive("seconds"), 0.5,
             "Seconds between sends of the batched messages to the data processor.", OUTPUT, "sinks"),
    Variable("KAFKA_USERNAME", "kafka_username", Text(), "", "SASL/PLAIN username; requires `KAFKA_PASSWORD`.",
             OUTPUT, "sinks", default_doc="unset"),
    Variable("KAFKA_PASSWORD", "kafka_password", Secret(), "", "SASL/PLAIN password; never logged; requires "
             "`KAFKA_USERNAME`.", OUTPUT, "sinks", default_doc="unset", secret=True),
    Variable("USE_TLS", "kafka_use_tls", Boolean(), False, "TLS to the brokers.", OUTPUT, "sinks"),
    Variable("KAFKA_CA_FILE", "kafka_ca_file", Parsed(_readable_file, "path of an existing, readable file"), "",
             "CA bundle (PEM) to verify the brokers.", OUTPUT, "config (exists), sinks", default_doc="unset"),
    Variable("AKTO_KAFKA_BATCH_WRITER", "kafka_batch_writer", Boolean(), True,
             "Write records straight into kafka-python's open batches (`sinks/kafka_batches.py`, about half "
             "the CPU per message); false: only kafka-python's public `send()`.", OUTPUT, "sinks"),
    Variable("AKTO_HEARTBEAT_TOPIC", "heartbeat_topic", Parsed(_topic, "Kafka topic name"),
             "akto.daemonset.producer.heartbeats", "Topic of the collector's heartbeats.", OUTPUT,
             "supervisor (heartbeats)"),
    Variable("AKTO_HEARTBEAT_INTERVAL", "heartbeat_interval", Positive("seconds"), 60.0,
             "Seconds between heartbeats.", OUTPUT, "supervisor (heartbeats)"),
    Variable("AKTO_MONGO_CONN", "mongo_conn", Secret(), "",
             "Accepted so existing manifests keep working; not used. Its password is masked in logs.",
             OUTPUT, "nothing", default_doc="unset", secret=True),
    # Identity and message fields
    Variable("AKTO_ACCOUNT_ID", "account_id", Parsed(_digits, "whole number (kept as a string)"), "1000000",
             "`akto_account_id` of every message.", IDENTITY, "`message`"),
    Variable("AKTO_VXLAN_ID", "vxlan_id", Parsed(_digits, "whole number (kept as a string)"), "0",
             "`akto_vxlan_id` of every message.", IDENTITY, "`message`"),
    Variable("AKTO_DAEMONSET_ID", "daemonset_id", Text(), Computed(
             lambda m: default_daemonset_id(m.machine_id_paths, m.node_name),
             "first 16 hex digits of a SHA-256 of the host's machine id (`/host/etc/machine-id`, then, "
             "outside Kubernetes, `/etc/machine-id`), else of the node name"),
             "`daemonset_id` of every message and the key of every heartbeat: a stable id of this "
             "collector's host.", IDENTITY, "`message`, heartbeats"),
    Variable("NODE_NAME", "node_name", Text(), Computed(lambda m: m.hostname, "the host name"),
             "Node (host) name, for heartbeats and logs. The DaemonSet sets it from the downward API.",
             IDENTITY, "heartbeats, logs"),
    Variable("POD_NAME", "pod_name", Text(), "", "The collector's own pod, for heartbeats and logs. The "
             "DaemonSet sets it from the downward API.", IDENTITY, "heartbeats, logs", default_doc="empty"),
    Variable("AKTO_IMAGE_VERSION", "image_version", Text(), f"akto-collector:{__version__}",
             "`imageVersion` of every heartbeat (the DaemonSet sets the image it runs).", IDENTITY, "heartbeats"),
    Variable("AKTO_INJECT_TAGS", "inject_tags", Parsed(parse_inject_tags, "`key=value` pairs separated by `;`, "
             "each key once, without spaces or quotes"), (),
             "Fixed tags added to the `tag` of every message (Akto's collector's syntax, e.g. "
             "`env=prod;team=payments`); a pod's labels and keys win over them. Outside Kubernetes, the only tags.",
             IDENTITY, "supervisor (`tags`)", default_doc="none"),
    Variable("AKTO_K8_METADATA_CAPTURE", "k8s_metadata_capture", Boolean(), False,
             "Add the pod's labels to `tag`, and take its name, namespace and containers' names from the "
             "Kubernetes API (the pods of `NODE_NAME`, listed and watched; needs `get`, `list` and `watch` "
             "on pods). Without it the pod's UID, container id, namespace and name still come from /proc "
             "(see [docs/message.md](message.md#tag)).",
             IDENTITY, "supervisor (`podwatch` thread); failures counted as `k8s.*`, never fatal"),
    Variable("AKTO_K8_SERVICE_ACCOUNT_DIR", "k8s_service_account_dir", Text(),
             "/var/run/secrets/kubernetes.io/serviceaccount",
             "Where the API credentials are, with `AKTO_K8_METADATA_CAPTURE`: the service account's `token` "
             "and `ca.crt` (the API's address is `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, as for "
             "any in-cluster client).", IDENTITY, "supervisor (`podwatch`)"),
    Variable("AKTO_REDACT_HEADERS", "redact_headers",
             Parsed(_header_names, "header names separated by commas (any case)"), (),
             "Headers whose values are replaced by `<redacted>` in every message, request and response, "
             "HTTP/1 and HTTP/2/gRPC (e.g. `authorization,cookie,set-cookie`). Off by default: Akto's API "
             "tests replay the captured requests, auth headers included. See "
             "[docs/message.md](message.md#redaction).", IDENTITY, "`redact`, in the worker",
             default_doc="none"),
    Variable("AKTO_REDACT_JSON_KEYS", "redact_json_keys",
             Parsed(_json_keys, "keys separated by commas (any case)"), (),
             "Object keys whose values are replaced by `<redacted>` at any depth of JSON bodies, and form "
             "fields of the same names in form bodies (e.g. `password,token`). Off by default.",
             IDENTITY, "`redact`, in the worker; `redact.body_not_json` counts bodies left as they were",
             default_doc="none"),
    # Operation
    Variable("AKTO_LOG_LEVEL", "log_level", Choice(LOG_LEVELS, {"warn": "warning"}), "info",
             "Least severe log level written (`warn` means `warning`).", OPERATION, "`logs`"),
    Variable("AKTO_STATS_INTERVAL", "stats_interval", Positive("seconds"), 10.0,
             "Seconds between the summary log lines of counters (events, pairs, bytes, drops by reason).",
             OPERATION, "supervisor"),
    Variable("AKTO_METRICS_ADDR", "metrics_addr", Parsed(_listen_address, "`host:port`; empty: no endpoint"),
             "127.0.0.1:9464",
             "Where `/metrics` (Prometheus), `/healthz` and `/readyz` are served. Empty disables them. It is "
             "never on a public address unless set so (in a DaemonSet with hostNetwork, the node's IP from the "
             "downward API).", OPERATION, "supervisor (health)", empty=""),
    Variable("AKTO_ENV_FILE", "env_file", Parsed(_env_file, "path of a readable file of `NAME=value` lines"), "",
             "A file of `NAME=value` lines read over the starting environment, at start and at every SIGHUP "
             "(the file the systemd unit names in it, or a ConfigMap mounted as a file). On SIGHUP the new "
             "configuration is validated first: bad, the old one keeps running; good, the collector re-execs "
             "with it.", OPERATION, "supervisor (reload)", default_doc="unset"),
)

KNOWN_VARIABLES = frozenset(v.name for v in VARIABLES)
_BY_NAME = {v.name: v for v in VARIABLES}
# AKTO_KAFKA_BROKER_MAL and AKTO_NLB_IP fill the same field: the first wins.
_FIELDS: dict[str, Variable] = {}
for _v in VARIABLES:
    _FIELDS.setdefault(_v.field, _v)


def _field_default(var: Variable) -> dataclasses.Field:
    if isinstance(var.default, Computed):
        compute = var.default.compute
        return dataclasses.field(default_factory=lambda: compute(_this_machine({})), repr=not var.secret)
    return dataclasses.field(default=var.default, repr=not var.secret)


class _SettingsMethods:
    """What Settings does beyond holding the table's fields."""

    __slots__ = ()

    @property
    def buffer_threshold_bytes(self) -> int:
        return self.buffer_threshold_mb * 1024 * 1024

    @property
    def mem_thresh_restart_bytes(self) -> int:
        return self.mem_thresh_restart_mb * 1024 * 1024

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        machine_id_paths: Sequence[str] | None = None,
        hostname: str | None = None,
        cpu_count: int | None = None,
    ) -> Settings:
        """Read and validate every setting; raise ConfigError at the first bad one.

        The keyword arguments replace what would otherwise be read from this
        machine (for tests): the machine-id files tried in order for the
        default ``daemonset_id``, the host name, the number of usable CPUs.
        """
        machine = _this_machine(env, machine_id_paths, hostname, cpu_count)
        values: dict[str, Any] = {}
        for var in VARIABLES:
            if var.field in values and values[var.field] != _default_of(var, machine):
                continue  # AKTO_KAFKA_BROKER_MAL was given: AKTO_NLB_IP is not read
            values[var.field] = read_variable(var, env, machine)
        settings = cls(**values)
        _check_combinations(settings, env)
        return settings

    def describe(self) -> dict[str, Any]:
        """Every field as JSON-ready data, safe to log: secrets are masked."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "discovery_rules":
                value = [rule.describe() for rule in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif name == "mongo_conn":
                value = _MONGO_PASSWORD.sub(r"\1***@", value)
            elif _FIELDS[name].secret:
                value = "***" if value else ""
            out[name] = value
        return out

    def warnings(self) -> list[str]:
        """Settings that are valid but probably not what was meant (the CLI logs them)."""
        notes = []
        if self.buffer_threshold_mb >= self.mem_thresh_restart_mb:
            notes.append(
                f"TRAFFIC_BUFFER_THRESHOLD={self.buffer_threshold_mb} MB is not below "
                f"AKTO_MEM_THRESH_RESTART={self.mem_thresh_restart_mb} MB: the collector "
                "restarts on memory before the buffer limit can act"
            )
        if not self.kafka_brokers:
            unused = [name for name, value in (("KAFKA_USERNAME", self.kafka_username), ("USE_TLS", self.kafka_use_tls),
                                               ("KAFKA_CA_FILE", self.kafka_ca_file)) if value]
            if unused:
                notes.append(f"{', '.join(unused)} set but no broker (AKTO_KAFKA_BROKER_MAL or "
                             "AKTO_NLB_IP): messages go to stdout")
        return notes


Settings = dataclasses.make_dataclass(
    "Settings",
    [(field, object, _field_default(var)) for field, var in _FIELDS.items()],
    bases=(_SettingsMethods,),
    frozen=True,
    slots=True,
)
Settings.__module__ = __name__  # make_dataclass(module=) is Python 3.12+; pickle needs it
Settings.__doc__ = "Every setting of the collector: one field per row of ``VARIABLES`` (frozen, picklable)."


# --- reading ------------------------------------------------------------------


def _this_machine(env: Mapping[str, str], machine_id_paths: Sequence[str] | None = None,
                  hostname: str | None = None, cpu_count: int | None = None) -> Machine:
    in_kubernetes = bool(str(env.get("KUBERNETES_SERVICE_HOST", "")).strip())
    hostname = socket.gethostname() if hostname is None else hostname
    if machine_id_paths is None:
        machine_id_paths = (HOST_MACHINE_ID_PATH,) if in_kubernetes else DEFAULT_MACHINE_ID_PATHS
    node = str(env.get("NODE_NAME", "")).strip() or hostname
    return Machine(in_kubernetes, hostname, usable_cpus() if cpu_count is None else cpu_count,
                   tuple(machine_id_paths), node)


def _default_of(var: Variable, machine: Machine) -> Any:
    return var.default.compute(machine) if isinstance(var.default, Computed) else var.default


def _show(raw: str) -> str:
    """The value for an error message: quoted, escapes visible, long ones cut."""
    if len(raw) > 200:
        return repr(raw[:200]) + "..."
    return repr(raw)


def read_variable(var: Variable, env: Mapping[str, str], machine: Machine) -> Any:
    """The variable's value from ``env`` (its default when unset or empty);
    ConfigError naming it when the text is not acceptable."""
    raw = env.get(var.name)
    if raw is None:
        return _default_of(var, machine)
    raw = str(raw)
    text = raw.strip() if var.reader.strip else raw
    if not text:
        return _default_of(var, machine) if var.empty is None else var.empty
    try:
        return var.reader.read(text)
    except ValueError as exc:
        raise ConfigError(f"{var.name}={_show(raw)}: {exc}") from None
    except RecursionError:  # a JSON value nested beyond reason
        raise ConfigError(f"{var.name}={_show(raw)}: nested too deeply") from None


def with_env_file(env: Mapping[str, str]) -> dict[str, str]:
    """The environment the settings are read from: ``env`` with the variables
    of ``AKTO_ENV_FILE`` (when set) over it. ConfigError when the file cannot be read."""
    out = dict(env)
    raw = str(env.get("AKTO_ENV_FILE", "")).strip()
    if raw:
        try:
            _env_file(raw)
            out.update(read_env_file(raw))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"AKTO_ENV_FILE={_show(raw)}: {exc}") from None
    return out


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """Names in ``env`` that look like ours (AKTO_*, TRAFFIC_*) but are not read:
    probably typos, worth a warning. Kubernetes service links are left out."""
    return sorted(
        name
        for name in env
        if name.startswith(_CHECKED_PREFIXES) and name not in KNOWN_VARIABLES and name not in INTERNAL_VARIABLES
        and not _SERVICE_LINK.fullmatch(name)
    )


def _check_combinations(s: Settings, env: Mapping[str, str]) -> None:
    if not s.capture_all and not s.capture_ssl:
        raise ConfigError(
            f"CAPTURE_ALL={_show(env.get('CAPTURE_ALL', ''))} and CAPTURE_SSL={_show(env.get('CAPTURE_SSL', ''))}: "
            "nothing would be captured; expected at least one of them true"
        )
    if s.kafka_username and not s.kafka_password:
        raise ConfigError(
            f"KAFKA_USERNAME={_show(s.kafka_username)}: KAFKA_PASSWORD is not set; expected both or neither"
        )
    if s.kafka_password and not s.kafka_username:
        # The password itself is never echoed.
        raise ConfigError("KAFKA_PASSWORD=<set>: KAFKA_USERNAME is not set; expected both or neither")


# --- docs ----------------------------------------------------------------------

DOCS_BEGIN = "<!-- variables: made by `make docs` (python -m akto_collector.config --update); do not edit -->"
DOCS_END = "<!-- end of variables -->"


def _default_text(var: Variable) -> str:
    if var.default_doc:
        return var.default_doc
    if isinstance(var.default, Computed):
        return var.default.doc
    value = var.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_tables() -> str:
    """The variable tables of docs/configuration.md, one per section."""
    out = [DOCS_BEGIN]
    for section in (CAPTURE, LIMITS, OUTPUT, IDENTITY, OPERATION):
        out += ["", f"### {section}", "", "| Variable | Meaning | Default | Accepted | Where it acts |",
                "|---|---|---|---|---|"]
        for v in VARIABLES:
            if v.section == section:
                out.append(f"| `{v.name}` (`{v.field}`) | {v.doc} | {_default_text(v)} | {v.reader.accepted} | "
                           f"{v.enforced} |")
    out += ["", DOCS_END]
    return "\n".join(out) + "\n"


README_BEGIN = "<!-- every variable: made by `make docs` from akto_collector/config.py; do not edit -->"
README_END = "<!-- end of every variable -->"


def _first_sentence(doc: str) -> str:
    m = re.match(r"(.+?)[.;](?=\s+[A-Z]|$)", doc)  # not at "e.g. `x`"
    return m.group(1) if m else doc


def readme_table() -> str:
    """The README's short table of every variable: name, default, first sentence."""
    out = [README_BEGIN, "", "| variable | default | what it does |", "|---|---|---|"]
    for v in VARIABLES:
        out.append(f"| `{v.name}` | {_default_text(v)} | {_first_sentence(v.doc)} |")
    out += ["", README_END]
    return "\n".join(out) + "\n"


def update_docs(path: str) -> None:
    """Replace the variable tables of a markdown file: the full ones (between
    DOCS_BEGIN and DOCS_END) or the README's short one."""
    with open(path, encoding="utf-8") as fh:
        doc = fh.read()
    begin, end_mark, made = (DOCS_BEGIN, DOCS_END, markdown_tables()) if DOCS_BEGIN in doc else \
        (README_BEGIN, README_END, readme_table())
    start, end = doc.index(begin), doc.index(end_mark) + len(end_mark) + 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc[:start] + made + doc[end:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_tables())
    elif len(sys.argv) == 3 and sys.argv[1] == "--update":
        update_docs(sys.argv[2])
    else:
        sys.exit("usage: python -m akto_collector.config --markdown | --update docs/configuration.md|README.md")
