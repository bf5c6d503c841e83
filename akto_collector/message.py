"""One request/response pair as the Akto message (see docs/http-core.md).

Every value is a string, header maps are JSON object strings, as the Akto
data processor expects. Cut bodies are marked (``requestPayloadCut``,
``requestPayloadSize`` and the same for the response) and a cut body that
looks like JSON is replaced by a short marker, because the consumer drops the
whole sample when a JSON-looking request body lacks its closing bracket.
"""

from __future__ import annotations

import orjson

from akto_collector.events import ROLE_CLIENT, ConnMeta, Exchange

# How the values of a header sent several times are joined. Set-Cookie values
# contain commas themselves (Expires=Wed, 21 Oct ...), so ", " would make them
# ambiguous; a newline can never occur inside a field value.
_JOINERS = {"set-cookie": "\n", "cookie": "; "}

_CUT_MARK = "akto-collector: body cut, {kept} of {size} bytes captured, JSON not shown"


class MessageEncoder:
    """Encodes an ``Exchange`` into (Kafka key, JSON value) bytes."""

    __slots__ = ("_account_id", "_vxlan_id", "_daemonset_id")

    def __init__(self, account_id: str = "1000000", vxlan_id: str = "0", daemonset_id: str = ""):
        self._account_id = str(account_id)
        self._vxlan_id = str(vxlan_id)
        self._daemonset_id = str(daemonset_id)

    def encode(self, exchange: Exchange, meta: ConnMeta) -> tuple[bytes, bytes]:
        """Key: the client's IP (no port). Value: the message as UTF-8 JSON."""
        req = exchange.request
        resp = exchange.response
        client = exchange.role == ROLE_CLIENT
        req_headers = header_map(req.headers)
        if "host" not in req_headers:
            req_headers["host"] = _default_host(req.target, meta.peer if client else meta.local)
        ts = req.ts or resp.ts
        msg = {
            "path": req.target,
            "method": req.method,
            "type": req.version,
            "requestHeaders": orjson.dumps(req_headers).decode(),
            "responseHeaders": orjson.dumps(header_map(resp.headers)).decode(),
            "requestPayload": payload_text(req.body, req.body_cut, req.body_size),
            "responsePayload": payload_text(resp.body, resp.body_cut, resp.body_size),
            "statusCode": str(resp.status),
            "status": f"{resp.status} {resp.reason}" if resp.reason else str(resp.status),
            "ip": meta.peer,
            "destIp": meta.local,
            "time": str(int(ts)),
            "direction": "2" if client else "1",
            "is_pending": "false",
            "source": "MIRRORING",
            "akto_account_id": self._account_id,
            "akto_vxlan_id": self._vxlan_id,
            "process_id": str(meta.pid),
            "socket_id": str(meta.fd),
            "process_name": meta.comm,
            "daemonset_id": self._daemonset_id,
            "tag": orjson.dumps(meta.tags).decode() if meta.tags else "{}",
            "requestPayloadCut": "true" if req.body_cut else "false",
            "responsePayloadCut": "true" if resp.body_cut else "false",
            "requestPayloadSize": str(req.body_size),
            "responsePayloadSize": str(resp.body_size),
            "tls": "true" if exchange.tls else "false",
        }
        key = _ip_only(meta.local if client else meta.peer).encode()
        return key, orjson.dumps(msg)


def header_map(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Header fields as one string per name.

    Names are kept as first sent, except Host, which is always the key
    ``host``. Names differing only in case are one field; repeated values are
    joined with ", " ("\\n" for Set-Cookie, "; " for Cookie).
    """
    out = dict(headers)
    if len(out) == len(headers):
        # Fast path: no name repeated exactly; check case-insensitively too.
        lows = {name.lower(): name for name in out}
        if len(lows) == len(out):
            host = lows.get("host")
            if host is not None and host != "host":
                out = {("host" if k == host else k): v for k, v in out.items()}
            return out
    out = {}
    keys: dict[str, str] = {}  # lower-cased name -> key used in out
    for name, value in headers:
        low = name.lower()
        key = keys.get(low)
        if key is None:
            key = "host" if low == "host" else name
            keys[low] = key
            out[key] = value
        else:
            out[key] = out[key] + _JOINERS.get(low, ", ") + value
    return out


def payload_text(body: bytes, cut: bool, size: int) -> str:
    """A body as text (invalid UTF-8 replaced); a cut JSON-looking body becomes a marker."""
    text = body.decode("utf-8", "replace")
    if cut and text.lstrip()[:1] in ("{", "["):
        return _CUT_MARK.format(kept=len(body), size=size)
    return text


def _default_host(target: str, address: str) -> str:
    # Absolute-form target (a request to a proxy): the authority it names.
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        authority = target.split("/", 3)[2]
        if authority:
            return authority.rpartition("@")[2]
    return address


def _ip_only(address: str) -> str:
    """ "10.0.0.1:80" -> "10.0.0.1", "[::1]:80" -> "::1"."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address
