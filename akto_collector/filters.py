"""Which request/response pairs are sent to Akto: discovery rules and ignore rules.

Pure: no I/O, no logging, nothing of ours but ``events``. The worker calls
``PairFilter.check`` once per pair, so the work is front-loaded: regexes are
compiled when the configuration is parsed, host classifications are cached,
and a filter with nothing to do returns at its first test.

Discovery rules (``AKTO_MODULE_DISCOVERY_CONFIG``) are a JSON list::

    [{"key": {"eq": "x-forwarded-client-cert", "ifAbsent": "reject"},
      "value": {"regex": ".*bookinfo.*"}}]

A pair is kept when every rule passes. A rule fails when its header is
absent and ``ifAbsent`` is ``"reject"`` (the default is ``"accept"``), or when
the header is present and ``re.search`` finds no match in its value. Header
names compare case-insensitively; a header sent several times is matched
against its values joined with ``", "`` (as the message carries it); the name
``host`` means the request's host (see ``request_host``). A rule without
``value`` only tests presence. Regexes use Python syntax and are
case-sensitive unless they say ``(?i)``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from akto_collector.addresses import host_of
from akto_collector.events import Exchange

# Drop reasons, as counted by the worker.
DROP_DISCOVERY = "filter.discovery"
DROP_IP_HOST = "filter.ip_host"
DROP_CLOUD_METADATA = "filter.cloud_metadata"

# Instance-metadata endpoints: AWS/Azure/GCP/OpenStack link-local IPv4, AWS
# IPv6 (Nitro), and GCP's name. Their traffic is the platform's, not the
# application's API.
CLOUD_METADATA_IPS = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
CLOUD_METADATA_NAMES = frozenset({"metadata.google.internal"})

_IF_ABSENT = {"accept": False, "reject": True}  # value: reject_if_absent
_RULE_KEYS = frozenset({"key", "value"})
_KEY_KEYS = frozenset({"eq", "ifAbsent"})
_VALUE_KEYS = frozenset({"regex"})


@dataclass(frozen=True, slots=True)
class DiscoveryRule:
    """One header test. ``pattern`` None means any value (presence only)."""

    header: str  # lower case
    pattern: re.Pattern[str] | None
    reject_if_absent: bool

    def describe(self) -> dict[str, Any]:
        """The rule in its configuration form (for logs)."""
        rule: dict[str, Any] = {
            "key": {"eq": self.header, "ifAbsent": "reject" if self.reject_if_absent else "accept"}
        }
        if self.pattern is not None:
            rule["value"] = {"regex": self.pattern.pattern}
        return rule

    def passes(self, value: str | None) -> bool:
        """Whether a request whose header value is ``value`` (None: absent) passes."""
        if value is None:
            return not self.reject_if_absent
        return self.pattern is None or self.pattern.search(value) is not None


def parse_discovery_config(text: str | None) -> tuple[DiscoveryRule, ...]:
    """Parse ``AKTO_MODULE_DISCOVERY_CONFIG``; empty or blank text means no rules.

    Raises ValueError with a one-line message naming the rule (by index) and
    the offending part. Nothing is silently replaced: a regex that does not
    compile is an error, not ``.*``.
    """
    if text is None or not text.strip():
        return ()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise ValueError(f"expected a JSON list of rules, got a JSON {_json_type(doc)}")
    return tuple(_parse_rule(i, item) for i, item in enumerate(doc))


def _parse_rule(index: int, item: Any) -> DiscoveryRule:
    where = f"rule {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got a JSON {_json_type(item)}")
    _reject_unknown(where, "", item, _RULE_KEYS)

    key = item.get("key")
    if not isinstance(key, dict):
        raise ValueError(f'{where}: missing "key": {{"eq": "<header name>"}}')
    _reject_unknown(where, "key.", key, _KEY_KEYS)
    header = key.get("eq")
    if not isinstance(header, str) or not header.strip():
        raise ValueError(f"{where}: key.eq={header!r}: expected a header name")
    if_absent = key.get("ifAbsent", "accept")
    reject = _IF_ABSENT.get(if_absent.lower()) if isinstance(if_absent, str) else None
    if reject is None:
        raise ValueError(f"{where}: key.ifAbsent={if_absent!r}: expected 'accept' or 'reject'")

    pattern = None
    if "value" in item:
        value = item["value"]
        if not isinstance(value, dict):
            raise ValueError(f'{where}: "value" must be an object like {{"regex": "..."}}')
        _reject_unknown(where, "value.", value, _VALUE_KEYS)
        if "regex" in value:
            source = value["regex"]
            if not isinstance(source, str):
                raise ValueError(f"{where}: value.regex={source!r}: expected a string")
            try:
                pattern = re.compile(source)
            except re.error as exc:
                raise ValueError(
                    f"{where}: value.regex={source!r} does not compile: {exc}"
                ) from None
    return DiscoveryRule(header.strip().lower(), pattern, reject)


def _reject_unknown(where: str, prefix: str, obj: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed))
        what = "operator" if prefix else "field"
        raise ValueError(f"{where}: unknown {what} {prefix}{unknown[0]}: expected {expected}")


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


# --- hosts ---------------------------------------------------------------


def request_host(exchange: Exchange, host: str | None = None) -> str | None:
    """The host a request was for: its Host header, else the authority of an
    absolute-form target (``GET http://svc:8080/x``), else ``host``."""
    for name, value in exchange.request.headers:
        if len(name) == 4 and name.lower() == "host":
            return value.strip()
    target = exchange.request.target
    if "://" in target:
        authority = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        authority = authority.rpartition("@")[2]  # drop userinfo
        if authority:
            return authority
    return host


_Ip = ipaddress.IPv4Address | ipaddress.IPv6Address


def _split_host(host: str) -> tuple[str, _Ip | None]:
    """``host[:port]`` → (lower-case name without port or trailing dot, its IP if a literal)."""
    # Host values come from the traced traffic: only short ones are cached (a
    # longer one is neither an IP nor a metadata name), so the cache stays small.
    if len(host) > 270:
        return "", None
    return _split_host_cached(host)


@lru_cache(maxsize=4096)
def _split_host_cached(host: str) -> tuple[str, _Ip | None]:
    h = host_of(host.strip().lower()).rstrip(".")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return h, None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return h, ip


def is_ip_host(host: str) -> bool:
    """Whether a Host value is an IP literal: ``10.0.0.1``, ``10.0.0.1:80``,
    ``[::1]:8080``, ``::1``."""
    return _split_host(host)[1] is not None


def is_cloud_metadata_host(host: str) -> bool:
    """Whether a Host value or ``address[:port]`` names a cloud instance-metadata endpoint."""
    name, ip = _split_host(host)
    if ip is not None:
        return ip in CLOUD_METADATA_IPS
    return name in CLOUD_METADATA_NAMES


# --- the filter ----------------------------------------------------------


class PairFilter:
    """Decides, per pair, whether it is sent on; see the module docstring."""

    __slots__ = ("rules", "ignore_ip_traffic", "ignore_cloud_metadata", "_headers", "_active")

    def __init__(
        self,
        rules: tuple[DiscoveryRule, ...] | list[DiscoveryRule] = (),
        ignore_ip_traffic: bool = False,
        ignore_cloud_metadata: bool = False,
    ) -> None:
        self.rules = tuple(rules)
        self.ignore_ip_traffic = ignore_ip_traffic
        self.ignore_cloud_metadata = ignore_cloud_metadata
        # Header names the rules read, other than "host" (which is resolved separately).
        self._headers = frozenset(r.header for r in self.rules) - {"host"}
        self._active = bool(self.rules) or ignore_ip_traffic or ignore_cloud_metadata

    @classmethod
    def from_settings(cls, settings: Any) -> PairFilter:
        """Build from a ``config.Settings`` (duck-typed: filters does not import config)."""
        return cls(
            settings.discovery_rules, settings.ignore_ip_traffic, settings.ignore_cloud_metadata
        )

    def check(
        self, exchange: Exchange, host: str | None = None, peer_ip: str | None = None
    ) -> str | None:
        """None keeps the pair; otherwise the drop reason: ``filter.cloud_metadata``,
        ``filter.ip_host`` or ``filter.discovery`` (tested in that order).

        ``host`` is the fallback host when the request names none; ``peer_ip``
        (``address[:port]`` of the other end) also identifies a metadata call
        when the request carries no host at all or an unusual one.
        """
        if not self._active:
            return None
        req_host = request_host(exchange, host)
        if self.ignore_cloud_metadata and (
            (req_host is not None and is_cloud_metadata_host(req_host))
            or (peer_ip and is_cloud_metadata_host(peer_ip))
        ):
            return DROP_CLOUD_METADATA
        if self.ignore_ip_traffic and req_host is not None and is_ip_host(req_host):
            return DROP_IP_HOST
        if self.rules and not self._rules_pass(exchange, req_host):
            return DROP_DISCOVERY
        return None

    def _rules_pass(self, exchange: Exchange, req_host: str | None) -> bool:
        values: dict[str, list[str]] = {}
        wanted = self._headers
        if wanted:
            for name, value in exchange.request.headers:
                lname = name.lower()
                if lname in wanted:
                    values.setdefault(lname, []).append(value)
        for rule in self.rules:
            if rule.header == "host":
                value = req_host
            else:
                found = values.get(rule.header)
                value = None if found is None else ", ".join(found)
            if not rule.passes(value):
                return False
        return True
