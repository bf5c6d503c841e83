"""One request/response pair as the Akto message (see docs/http-core.md).

Every value is a string, header maps are JSON object strings, as the Akto
data processor expects. Cut bodies are marked (``requestPayloadCut``,
``requestPayloadSize`` and the same for the response) and a cut body that
looks like JSON is replaced by a short marker, because the consumer drops the
whole sample when a JSON-looking request body lacks its closing bracket.
``ip`` is the client end of the call and ``destIp`` the server end, in both
directions; ``tag`` is the process's (``ConnMeta.tag``, akto_collector/tags.py);
the listed headers and body keys are redacted when so configured (``redact``).
"""

from __future__ import annotations

import base64

import orjson

from akto_collector.addresses import host_of
from akto_collector.events import ROLE_CLIENT, ConnMeta, Exchange
from akto_collector.redact import Redactor

# How the values of a header sent several times are joined. Set-Cookie values
# contain commas themselves (Expires=Wed, 21 Oct ...), so ", " would make them
# ambiguous; a newline can never occur inside a field value.
_JOINERS = {"set-cookie": "\n", "cookie": "; "}

_CUT_MARK = "akto-collector: body cut, {kept} of {size} bytes captured, JSON not shown"

_dumps = orjson.dumps

# The message after the per-pair head (path ... status, its closing brace
# removed), as the pieces between its values: orjson's compact output, so the
# value equals orjson.dumps of the whole message as one dict. Joined, not
# %-formatted: bytes formatting parses its template on every call.
_TIME = b',"time":"'
_TIME_END = b'",'
_CUTS = (  # (request cut, response cut) -> the two members, with the size key that follows
    b',"requestPayloadCut":"false","responsePayloadCut":"false","requestPayloadSize":"',
    b',"requestPayloadCut":"false","responsePayloadCut":"true","requestPayloadSize":"',
    b',"requestPayloadCut":"true","responsePayloadCut":"false","requestPayloadSize":"',
    b',"requestPayloadCut":"true","responsePayloadCut":"true","requestPayloadSize":"',
)
_RESP_SIZE = b'","responsePayloadSize":"'
_TLS = (b'","tls":"false"}', b'","tls":"true"}')
_MAX_CONNS = 4096  # cached connections' constant fields; beyond, the cache starts afresh


class MessageEncoder:
    """Encodes an ``Exchange`` into (Kafka key, JSON value) bytes.

    The value is byte for byte what ``orjson.dumps`` gives for the message as
    a dict of strings (in the order of akto-message.md), built in three
    pieces because most of it does not change within a connection: the
    per-pair strings go through one ``orjson.dumps``, the connection's
    constant fields are serialized once per connection and cached.
    """

    __slots__ = ("_account_id", "_vxlan_id", "_daemonset_id", "_conns", "_redactor")

    def __init__(self, account_id: str = "1000000", vxlan_id: str = "0", daemonset_id: str = "",
                 redactor: Redactor | None = None):
        self._account_id = str(account_id)
        self._vxlan_id = str(vxlan_id)
        self._daemonset_id = str(daemonset_id)
        # (pid, fd, comm, local, peer, client) -> (tag, kafka key, ip fields, middle fields);
        # keyed by value, not by the ConnMeta object, because the worker fills
        # a ConnMeta in place as it learns more about the connection.
        self._conns: dict[tuple, tuple[str, bytes, bytes, bytes]] = {}
        self._redactor = redactor  # None: nothing is redacted, and that costs nothing

    def encode(self, exchange: Exchange, meta: ConnMeta) -> tuple[bytes, bytes]:
        """Key: the client's IP (no port). Value: the message as UTF-8 JSON."""
        req = exchange.request
        resp = exchange.response
        client = exchange.role == ROLE_CLIENT
        req_headers, host = _fields(req.headers, req.host_name)
        if host is None and "host" not in req_headers:
            req_headers["host"] = _default_host(req.target, meta.peer if client else meta.local)
        resp_headers = header_map(resp.headers, resp.host_name)
        req_text = payload_text(req.body, req.body_cut, req.body_size) if req.grpc_sizes is None \
            else grpc_text(req.body)
        resp_text = payload_text(resp.body, resp.body_cut, resp.body_size) if resp.grpc_sizes is None \
            else grpc_text(resp.body)
        redactor = self._redactor
        if redactor is not None:
            req_text = redactor.redact(req_headers, req_text, req.body, req.grpc_sizes is None)
            resp_text = redactor.redact(resp_headers, resp_text, resp.body, resp.grpc_sizes is None)
        req_json = _dumps(req_headers) if host is None else _rename_host(_dumps(req_headers), host)
        status = resp.status
        head = _dumps({
            "path": req.target,
            "method": req.method,
            "type": req.version,
            "requestHeaders": req_json.decode(),
            "responseHeaders": _dumps(resp_headers).decode(),
            "requestPayload": req_text,
            "responsePayload": resp_text,
            "statusCode": str(status),
            "status": f"{status} {resp.reason}" if resp.reason else str(status),
        })
        cid = (meta.pid, meta.fd, meta.comm, meta.local, meta.peer, client)
        conn = self._conns.get(cid)
        if conn is None or conn[0] != meta.tag:
            conn = self._conn_fields(meta, client)
            if len(self._conns) >= _MAX_CONNS:
                self._conns.clear()
            self._conns[cid] = conn
        value = b"".join((
            memoryview(head)[:-1],  # without its closing brace (a view: no copy)
            b",",
            conn[2],
            _TIME,
            str(int(req.ts or resp.ts)).encode(),
            _TIME_END,
            conn[3],
            _CUTS[(2 if req.body_cut else 0) + (1 if resp.body_cut else 0)],
            str(req.body_size).encode(),
            _RESP_SIZE,
            str(resp.body_size).encode(),
            _TLS[1 if exchange.tls else 0],
        ))
        if req.grpc_sizes is not None or resp.grpc_sizes is not None or exchange.extra:
            value = value[:-1] + b"," + _dumps(_extra_fields(exchange))[1:]
        return conn[1], value

    def _conn_fields(self, meta: ConnMeta, client: bool) -> tuple[str, bytes, bytes, bytes]:
        """The fields constant on a connection, as serialized JSON members (no braces)."""
        # As Akto's own collector: "ip" is the client end of the call, "destIp" the server end.
        if client:
            ip = _dumps({"ip": meta.local, "destIp": meta.peer})[1:-1]
        else:
            ip = _dumps({"ip": meta.peer, "destIp": meta.local})[1:-1]
        middle = _dumps({
            "direction": "2" if client else "1",
            "is_pending": "false",
            "source": "MIRRORING",
            "akto_account_id": self._account_id,
            "akto_vxlan_id": self._vxlan_id,
            "process_id": str(meta.pid),
            "socket_id": str(meta.fd),
            "process_name": meta.comm,
            "daemonset_id": self._daemonset_id,
            "tag": meta.tag,
        })[1:-1]
        key = host_of(meta.local if client else meta.peer).encode()
        return meta.tag, key, ip, middle


def header_map(headers: list[tuple[str, str]], host_name: str | None = None) -> dict[str, str]:
    """Header fields as one string per name.

    Names are kept as first sent, except Host, which is always the key
    ``host``. Names differing only in case are one field; repeated values are
    joined with ", " ("\\n" for Set-Cookie, "; " for Cookie). ``host_name``:
    the message's (HttpRequest.host_name).
    """
    out, host = _fields(headers, host_name)
    if host is not None:
        out = {("host" if k == host else k): v for k, v in out.items()}
    return out


def _fields(headers: list[tuple[str, str]], host_name: str | None) -> tuple[dict[str, str], str | None]:
    """``header_map`` but for one step: Host may still be under the name it was sent as.

    That name (e.g. "Host") is returned when it is not "host" and still needs
    renaming. A dict cannot rename a key in place, and the usual request (no
    repeats, "Host") would need a second dict just for that; the encoder
    renames it in the serialized JSON instead.
    """
    out = dict(headers)
    if host_name is not None:  # the parser proved the names distinct ignoring case
        return out, (host_name if host_name and host_name != "host" else None)
    n = len(out)
    if n == len(headers):
        # Fast path: no name repeated exactly; check case-insensitively too.
        joined = "\n".join(out)
        if joined.isascii() and (joined.islower() or (raw := joined.encode()).title() == raw):
            # All names lower-case, or all Title-Case ("X-Request-Id"): for
            # ASCII, names differing only in case would then be equal, so none
            # repeats, and Host can only be spelt "host" or "Host". One call
            # over all names is cheaper than lower-casing each (bytes.title:
            # str.title has no ASCII fast path).
            return out, ("Host" if "Host" in out else None)
        lows = set(map(str.lower, out))
        if len(lows) == n:
            if "host" in out or "host" not in lows:
                return out, None
            if "Host" in out:
                return out, "Host"
            for k in out:  # a loop, not next(generator): a compiled cpdef cannot hold a closure
                if k.lower() == "host":
                    return out, k
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
    return out, None


def _rename_host(doc: bytes, host: str) -> bytes:
    """Rename the key ``host`` (e.g. "Host") of a serialized header map to "host".

    Only ASCII letters lower-case to "host", so the key is written as is. A
    key starts right after "{" or ",": inside a JSON string a quote is always
    escaped, so neither pair occurs there, and the match is the key itself.
    """
    key = b'"%s":' % host.encode()
    if doc.startswith(key, 1):
        return b'{"host":' + doc[len(key) + 1:]
    return doc.replace(b"," + key, b',"host":', 1)


def payload_text(body: bytes, cut: bool, size: int) -> str:
    """A body as text (invalid UTF-8 replaced); a cut JSON-looking body becomes a marker."""
    text = body.decode("utf-8", "replace")
    if cut and text.lstrip()[:1] in ("{", "["):
        return _CUT_MARK.format(kept=len(body), size=size)
    return text


def grpc_text(body: bytes) -> str:
    """gRPC messages are protobuf, binary: base64 of their bytes (as Akto's collector sends them)."""
    return base64.b64encode(body).decode("ascii")


def _extra_fields(exchange: Exchange) -> dict[str, str]:
    """The fields a protocol adds: gRPC message sizes (a JSON array string each), then its own."""
    out = {}
    sizes = exchange.request.grpc_sizes
    if sizes is not None:
        out["requestGrpcMessageSizes"] = _dumps(sizes).decode()
    sizes = exchange.response.grpc_sizes
    if sizes is not None:
        out["responseGrpcMessageSizes"] = _dumps(sizes).decode()
    if exchange.extra:
        out.update(exchange.extra)
    return out


def _default_host(target: str, address: str) -> str:
    # Absolute-form target (a request to a proxy): the authority it names.
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        authority = target.split("/", 3)[2]
        if authority:
            return authority.rpartition("@")[2]
    return address
