"""Addresses as the collector writes and reads them: ``host:port``, IPv6 in brackets.

One place for the forms, used by every stage: joining an IP and a port
(messages, /proc), taking the host out of an address or a Host value
(filters, Kafka keys), splitting a broker address to connect to, and
validating what an operator wrote (``parse_host_port``, which raises
``ValueError`` saying what is expected). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re

_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


def join_host_port(host: str, port: int) -> str:
    """ "10.0.0.1", 80 -> "10.0.0.1:80"; "::1", 80 -> "[::1]:80"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, str]:
    """Lenient split of ``host[:port]`` as traffic carries it: (host, port text or "").

    "[::1]:80" -> ("::1", "80"), "::1" -> ("::1", "") (bare IPv6 has two or
    more colons), "svc:8080" -> ("svc", "8080"), "svc" -> ("svc", "").
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, ""


def host_of(address: str) -> str:
    """The host part of an address: "10.0.0.1:80" -> "10.0.0.1", "[::1]:80" -> "::1"."""
    return split_host_port(address)[0]


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_host_port(item: str, default_port: int | None, form: str = "") -> str:
    """Validate an operator's ``host[:port]`` and return it as ``host:port``
    (IPv6 bracketed). ``default_port`` None means the port is required.
    Raises ValueError whose text says what is expected (``form``) and why."""
    form = form or ("host:port" if default_port is None else "host or host:port")

    def bad(why: str) -> ValueError:
        return ValueError(f"expected {form} ({why})")

    if "://" in item:
        raise bad(f"{item!r}: no scheme, just the address")
    if item.startswith("["):
        host, closed, rest = item[1:].partition("]")
        if not closed or not is_ipv6(host):
            raise bad(f"{item!r} is not a bracketed IPv6 address")
        if rest and not rest.startswith(":"):
            raise bad(f"unexpected {rest!r} after ']'")
        port_text = rest[1:] if rest else None
        host = f"[{host}]"
    elif item.count(":") >= 2:
        if default_port is None or not is_ipv6(item):
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


def parse_host_port_list(raw: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A comma-separated list (or a sequence) of ``host:port``, each validated;
    empty entries are skipped. Raises ValueError as ``parse_host_port``."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(parse_host_port(item.strip(), None, "host:port[,host:port...]") for item in items if item.strip())
