"""Settings of the collector, read once from the environment.

``Settings.from_env(os.environ)`` returns a frozen, picklable ``Settings`` (the
supervisor hands it to the workers) or raises ``ConfigError`` at the first bad
value. The error's text is one line naming the variable, the value as given
and what is expected; the CLI prints it and exits 2. The variable names and
their meanings are those of Akto's DaemonSet guide, so an existing manifest
keeps working; docs/configuration.md lists them all.

Conventions: surrounding whitespace is ignored and an empty value counts as
unset (Kubernetes manifests often carry ``value: ""``); booleans take
true/false/1/0/yes/no/on/off in any case; numbers are plain decimals (no NaN,
no infinity, no sign other than ``+``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from akto_collector.filters import DiscoveryRule, parse_discovery_config

T = TypeVar("T")

MAX_WORKERS = 64
# The connection limit also sizes kernel maps; beyond this a typo (an extra
# zero or three) would fail at probe load with an obscure error instead of here.
MAX_ACTIVE_CONN_LIMIT = 1 << 20
KAFKA_DEFAULT_PORT = 9092
KAFKA_COMPRESSIONS = ("none", "gzip", "lz4", "snappy", "zstd")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_HEARTBEAT_TOPIC = "akto.daemonset.producer.heartbeats"

# Inside Kubernetes the container's own /etc/machine-id belongs to the image
# (identical on every node, or absent), so only the host's, mounted by the
# DaemonSet at /host/etc/machine-id, is trusted there.
HOST_MACHINE_ID_PATH = "/host/etc/machine-id"
DEFAULT_MACHINE_ID_PATHS = (HOST_MACHINE_ID_PATH, "/etc/machine-id")

KNOWN_VARIABLES = frozenset(
    {
        "AKTO_MODULE_DISCOVERY_CONFIG",
        "TRAFFIC_INACTIVITY_THRESHOLD",
        "TRAFFIC_MAX_ACTIVE_CONN",
        "TRAFFIC_DISABLE_EGRESS",
        "AKTO_MEM_THRESH_RESTART",
        "TRAFFIC_BUFFER_THRESHOLD",
        "AKTO_IGNORE_IP_TRAFFIC",
        "AKTO_IGNORE_CLOUD_METADATA_CALLS",
        "KAFKA_POLL_INTERVAL",
        "UPROBE_POLL_INTERVAL",
        "CAPTURE_ALL",
        "CAPTURE_SSL",
        "PROBE_ALL_PID",
        "AKTO_KAFKA_BROKER_MAL",
        "AKTO_NLB_IP",
        "AKTO_KAFKA_TOPIC",
        "AKTO_KAFKA_COMPRESSION",
        "KAFKA_USERNAME",
        "KAFKA_PASSWORD",
        "USE_TLS",
        "KAFKA_CA_FILE",
        "AKTO_HEARTBEAT_TOPIC",
        "AKTO_HEARTBEAT_INTERVAL",
        "AKTO_MONGO_CONN",
        "AKTO_WORKERS",
        "AKTO_MAX_BODY_BYTES",
        "AKTO_ACCOUNT_ID",
        "AKTO_VXLAN_ID",
        "AKTO_DAEMONSET_ID",
        "NODE_NAME",
        "POD_NAME",
        "AKTO_LOG_LEVEL",
        "AKTO_STATS_INTERVAL",
    }
)
_CHECKED_PREFIXES = ("AKTO_", "TRAFFIC_")
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
_TOPIC_EXPECTED = "expected a Kafka topic name (up to 249 of A-Z a-z 0-9 . _ -)"
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_MONGO_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


class ConfigError(Exception):
    """A bad setting. ``str()`` is one line: the variable, its value, what is expected."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the collector. Field defaults are the documented defaults
    (``daemonset_id`` is only filled by ``from_env``)."""

    discovery_rules: tuple[DiscoveryRule, ...] = ()
    inactivity_threshold: float = 30.0  # seconds
    max_active_conn: int = 4096
    disable_egress: bool = False
    mem_thresh_restart_mb: int = 800
    buffer_threshold_mb: int = 600
    ignore_ip_traffic: bool = False
    ignore_cloud_metadata: bool = False
    kafka_poll_interval: float = 0.5  # seconds
    uprobe_poll_interval: float = 300.0  # seconds (the variable is in minutes)
    capture_all: bool = True
    capture_ssl: bool = True
    probe_all_pid: bool = True
    kafka_brokers: tuple[str, ...] = ()  # "host:port", IPv6 as "[addr]:port"; empty: stdout
    kafka_topic: str = "akto.api.logs"
    kafka_compression: str = "lz4"
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_use_tls: bool = False
    kafka_ca_file: str = ""
    heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC
    heartbeat_interval: float = 60.0  # seconds
    mongo_conn: str = field(default="", repr=False)  # accepted for compatibility, unused
    workers: int = field(default_factory=lambda: default_workers())
    max_body_bytes: int = 1 << 20
    account_id: str = "1000000"
    vxlan_id: str = "0"
    daemonset_id: str = ""
    node_name: str = field(default_factory=socket.gethostname)
    pod_name: str = ""
    log_level: str = "info"
    stats_interval: float = 10.0  # seconds

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
        e = _EnvReader(env)
        in_kubernetes = bool(e.get("KUBERNETES_SERVICE_HOST"))
        node_name = e.text("NODE_NAME", hostname if hostname is not None else socket.gethostname())
        if machine_id_paths is None:
            machine_id_paths = (
                (HOST_MACHINE_ID_PATH,) if in_kubernetes else DEFAULT_MACHINE_ID_PATHS
            )
        if cpu_count is None:
            cpu_count = usable_cpus()

        settings = cls(
            discovery_rules=e.parse(
                "AKTO_MODULE_DISCOVERY_CONFIG", (), parse_discovery_config, None
            ),
            inactivity_threshold=e.positive("TRAFFIC_INACTIVITY_THRESHOLD", 30.0, "seconds"),
            max_active_conn=e.whole("TRAFFIC_MAX_ACTIVE_CONN", 4096, 1, MAX_ACTIVE_CONN_LIMIT),
            disable_egress=e.boolean("TRAFFIC_DISABLE_EGRESS", False),
            mem_thresh_restart_mb=e.whole("AKTO_MEM_THRESH_RESTART", 800, 1, None, "MB"),
            buffer_threshold_mb=e.whole("TRAFFIC_BUFFER_THRESHOLD", 600, 1, None, "MB"),
            ignore_ip_traffic=e.boolean("AKTO_IGNORE_IP_TRAFFIC", False),
            ignore_cloud_metadata=e.boolean("AKTO_IGNORE_CLOUD_METADATA_CALLS", False),
            kafka_poll_interval=e.positive("KAFKA_POLL_INTERVAL", 0.5, "seconds"),
            uprobe_poll_interval=60.0 * e.positive("UPROBE_POLL_INTERVAL", 5.0, "minutes"),
            capture_all=e.boolean("CAPTURE_ALL", True),
            capture_ssl=e.boolean("CAPTURE_SSL", True),
            probe_all_pid=e.boolean("PROBE_ALL_PID", not in_kubernetes),
            kafka_brokers=_read_brokers(e),
            kafka_topic=e.parse("AKTO_KAFKA_TOPIC", "akto.api.logs", _topic, _TOPIC_EXPECTED),
            kafka_compression=e.choice("AKTO_KAFKA_COMPRESSION", "lz4", KAFKA_COMPRESSIONS),
            kafka_username=e.text("KAFKA_USERNAME", ""),
            kafka_password=e.secret("KAFKA_PASSWORD"),
            kafka_use_tls=e.boolean("USE_TLS", False),
            kafka_ca_file=e.parse("KAFKA_CA_FILE", "", _readable_file, None),
            heartbeat_topic=e.parse(
                "AKTO_HEARTBEAT_TOPIC", DEFAULT_HEARTBEAT_TOPIC, _topic, _TOPIC_EXPECTED
            ),
            heartbeat_interval=e.positive("AKTO_HEARTBEAT_INTERVAL", 60.0, "seconds"),
            mongo_conn=e.secret("AKTO_MONGO_CONN"),
            workers=e.whole("AKTO_WORKERS", min(MAX_WORKERS, max(1, cpu_count)), 1, MAX_WORKERS),
            max_body_bytes=e.whole("AKTO_MAX_BODY_BYTES", 1 << 20, 0, None, "bytes"),
            account_id=e.parse("AKTO_ACCOUNT_ID", "1000000", _digits, "expected a whole number"),
            vxlan_id=e.parse("AKTO_VXLAN_ID", "0", _digits, "expected a whole number"),
            daemonset_id=e.text("AKTO_DAEMONSET_ID", "")
            or default_daemonset_id(machine_id_paths, node_name),
            node_name=node_name,
            pod_name=e.text("POD_NAME", ""),
            log_level=e.choice("AKTO_LOG_LEVEL", "info", LOG_LEVELS, aliases={"warn": "warning"}),
            stats_interval=e.positive("AKTO_STATS_INTERVAL", 10.0, "seconds"),
        )
        _check_combinations(settings, e)
        return settings

    def describe(self) -> dict[str, Any]:
        """Every field as JSON-ready data, safe to log: secrets are masked."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "discovery_rules":
                value = [rule.describe() for rule in value]
            elif name == "kafka_brokers":
                value = list(value)
            elif name == "kafka_password":
                value = "***" if value else ""
            elif name == "mongo_conn":
                value = _MONGO_PASSWORD.sub(r"\1***@", value)
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
            unused = [
                name
                for name, value in (
                    ("KAFKA_USERNAME", self.kafka_username),
                    ("USE_TLS", self.kafka_use_tls),
                    ("KAFKA_CA_FILE", self.kafka_ca_file),
                )
                if value
            ]
            if unused:
                notes.append(
                    f"{', '.join(unused)} set but no broker (AKTO_KAFKA_BROKER_MAL or "
                    "AKTO_NLB_IP): messages go to stdout"
                )
        return notes


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """Names in ``env`` that look like ours (AKTO_*, TRAFFIC_*) but are not read:
    probably typos, worth a warning. Kubernetes service links are left out."""
    return sorted(
        name
        for name in env
        if name.startswith(_CHECKED_PREFIXES)
        and name not in KNOWN_VARIABLES
        and not _SERVICE_LINK.fullmatch(name)
    )


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which honours cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    return min(MAX_WORKERS, max(1, usable_cpus()))


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


# --- reading values ------------------------------------------------------


def _show(raw: str) -> str:
    """The value for an error message: quoted, escapes visible, long ones cut."""
    if len(raw) > 200:
        return repr(raw[:200]) + "..."
    return repr(raw)


class _EnvReader:
    """Typed access to the environment; every failure is a ConfigError."""

    __slots__ = ("env",)

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str) -> str | None:
        """The stripped value, or None when unset or empty."""
        raw = self.env.get(name)
        if raw is None:
            return None
        raw = str(raw).strip()
        return raw or None

    def fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(f"{name}={_show(str(self.env.get(name, '')))}: {expected}")

    def text(self, name: str, default: str) -> str:
        raw = self.get(name)
        return default if raw is None else raw

    def secret(self, name: str) -> str:
        # Taken as given (a password may start or end with a space).
        raw = self.env.get(name)
        return "" if raw is None else str(raw)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise self.fail(name, "expected true or false (also 1/0, yes/no, on/off)")

    def whole(
        self, name: str, default: int, minimum: int, maximum: int | None, unit: str = ""
    ) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        value = int(raw) if _WHOLE.fullmatch(raw) else None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            of = f" of {unit}" if unit else ""
            if maximum is not None:
                expected = f"expected a whole number{of} from {minimum} to {maximum}"
            elif minimum == 1:
                expected = f"expected a positive whole number{of}"
            else:
                expected = f"expected a whole number{of}, {minimum} or more"
            raise self.fail(name, expected)
        return value

    def positive(self, name: str, default: float, unit: str) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        value = float(raw) if _DECIMAL.fullmatch(raw) else None
        if value is None or not 0.0 < value < float("inf"):
            raise self.fail(name, f"expected a positive number of {unit}")
        return value

    def choice(
        self,
        name: str,
        default: str,
        choices: Sequence[str],
        aliases: Mapping[str, str] | None = None,
    ) -> str:
        raw = self.get(name)
        if raw is None:
            return default
        low = raw.lower()
        low = (aliases or {}).get(low, low)
        if low not in choices:
            raise self.fail(name, f"expected one of {', '.join(choices)}")
        return low

    def parse(
        self, name: str, default: T, parser: Callable[[str], T], expected: str | None
    ) -> T:
        """Apply ``parser``; its ValueError becomes the expectation (or ``expected``)."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return parser(raw)
        except ValueError as exc:
            raise self.fail(name, expected or str(exc)) from None


def _digits(raw: str) -> str:
    # Akto keeps these ids as integers; the message carries them as strings.
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(raw)
    return raw


def _topic(raw: str) -> str:
    if not _TOPIC.fullmatch(raw) or raw in (".", ".."):
        raise ValueError(raw)
    return raw


def _readable_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError("expected the path of an existing file (a CA bundle in PEM)")
    if not os.access(raw, os.R_OK):
        raise ValueError("expected a file this process can read")
    return raw


def _read_brokers(e: _EnvReader) -> tuple[str, ...]:
    """AKTO_KAFKA_BROKER_MAL (a list, ports required) wins over AKTO_NLB_IP (one
    address, port 9092 unless given). Neither: no Kafka."""
    if e.get("AKTO_KAFKA_BROKER_MAL") is not None:
        return e.parse("AKTO_KAFKA_BROKER_MAL", (), _broker_list, None)
    if e.get("AKTO_NLB_IP") is not None:
        return e.parse(
            "AKTO_NLB_IP",
            (),
            lambda raw: (_host_port(raw, KAFKA_DEFAULT_PORT),),
            None,
        )
    return ()


def _broker_list(raw: str) -> tuple[str, ...]:
    items = [item.strip() for item in raw.split(",")]
    brokers = tuple(_host_port(item, None) for item in items if item)
    if not brokers:
        raise ValueError("expected host:port[,host:port...]")
    return brokers


def _host_port(item: str, default_port: int | None) -> str:
    """Validate ``host[:port]`` and return it as ``host:port`` (IPv6 bracketed).
    ``default_port`` None means the port is required."""
    form = "host:port[,host:port...]" if default_port is None else "host or host:port"

    def bad(why: str) -> ValueError:
        return ValueError(f"expected {form} ({why})")

    if "://" in item:
        raise bad(f"{item!r}: no scheme, just the address")
    if item.startswith("["):
        host, closed, rest = item[1:].partition("]")
        if not closed or not _is_ipv6(host):
            raise bad(f"{item!r} is not a bracketed IPv6 address")
        if rest and not rest.startswith(":"):
            raise bad(f"unexpected {rest!r} after ']'")
        port_text = rest[1:] if rest else None
        host = f"[{host}]"
    elif item.count(":") >= 2:
        if default_port is None or not _is_ipv6(item):
            raise bad(f"{item!r}: write IPv6 addresses in brackets, [addr]:port")
        host, port_text = f"[{item}]", None
    else:
        host, colon, port_text_raw = item.partition(":")
        port_text = port_text_raw if colon else None
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise bad(f"{host!r} is not an IPv4 address") from None
        elif not _HOSTNAME.fullmatch(host):
            raise bad(f"{host!r} is not a host name or address")
    if port_text is None:
        if default_port is None:
            raise bad(f"{item!r} has no port")
        port = default_port
    else:
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
        if not 1 <= port <= 65535:
            raise bad(f"port {port_text!r} is not 1 to 65535")
    return f"{host}:{port}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _check_combinations(s: Settings, e: _EnvReader) -> None:
    if not s.capture_all and not s.capture_ssl:
        raise ConfigError(
            f"CAPTURE_ALL={_show(e.env.get('CAPTURE_ALL', ''))} and "
            f"CAPTURE_SSL={_show(e.env.get('CAPTURE_SSL', ''))}: nothing would be captured; "
            "expected at least one of them true"
        )
    if s.kafka_username and not s.kafka_password:
        raise ConfigError(
            f"KAFKA_USERNAME={_show(s.kafka_username)}: KAFKA_PASSWORD is not set; "
            "expected both or neither"
        )
    if s.kafka_password and not s.kafka_username:
        # The password itself is never echoed.
        raise ConfigError(
            "KAFKA_PASSWORD=<set>: KAFKA_USERNAME is not set; expected both or neither"
        )
