"""Opt-in redaction: named header values and body keys replaced before a message leaves.

Off by default (``AKTO_REDACT_HEADERS``, ``AKTO_REDACT_JSON_KEYS``): Akto's
API tests replay the captured requests, auth headers included. When on, the
encoder hands each message's header maps and body text to ``Redactor.redact``:

- a header whose name is listed (any case) has its value replaced by
  ``REDACTED``, in the request and the response, HTTP/1 and HTTP/2 / gRPC
  alike; a header sent several times is one joined value, replaced whole;
- in a JSON body (one that starts with ``{`` or ``[``, or is declared JSON),
  the value of every object key that is listed (any case) is replaced, at any
  depth, inside arrays too, whatever its type; the body is then written
  again compactly (the standard library's ``json``, which keeps every number
  as it was); a body with no listed key is left byte for byte;
- in a form body (``application/x-www-form-urlencoded``) the same keys are
  form fields, and only the listed fields' values change;
- ``content-length``, when it gave the length of the body as shipped,
  gives the redacted body's length.

Not covered: query strings in ``path``, multipart bodies, gRPC bodies
(protobuf, binary), cut JSON bodies (never shown: the cut marker stands in).
A body that should be JSON but does not parse is left as is and counted
(``redact.body_not_json``); it is only parsed at all when a listed key occurs
in its text, so bodies without one cost a scan of their text.

Pure: strings in, strings out, counters; no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from urllib.parse import quote_plus, unquote_plus

REDACTED = "<redacted>"
_FORM_REDACTED = quote_plus(REDACTED)
_FORM = "application/x-www-form-urlencoded"


class Redactor:
    """Replaces the values of the listed headers and body keys (names in any case)."""

    __slots__ = ("headers", "keys", "counters")

    def __init__(self, headers: Iterable[str], keys: Iterable[str], counters: Counter) -> None:
        self.headers = frozenset(h.lower() for h in headers)
        self.keys = frozenset(k.lower() for k in keys)
        self.counters = counters

    @classmethod
    def from_settings(cls, settings, counters: Counter) -> Redactor | None:
        """None when nothing is to be redacted: the encoder then does no work for it."""
        if not settings.redact_headers and not settings.redact_json_keys:
            return None
        return cls(settings.redact_headers, settings.redact_json_keys, counters)

    def redact(self, headers: dict[str, str], text: str, body: bytes, textual: bool = True) -> str:
        """Redact ``headers`` (a header map, in place) and return the body's text
        redacted. ``body`` is the body as captured (for its length), ``textual``
        false for a body that is not text (gRPC)."""
        if self.headers:
            for name in headers:
                if name.lower() in self.headers:
                    headers[name] = REDACTED
                    self.counters["redact.header_values"] += 1
        if not self.keys or not textual or not text:
            return text
        redacted = self._body(text, headers)
        if redacted is None:
            return text
        for name, value in headers.items():
            if name.lower() == "content-length":
                if value.strip() == str(len(body)):
                    headers[name] = str(len(redacted.encode()))
                break
        return redacted

    def _body(self, text: str, headers: dict[str, str]) -> str | None:
        """The redacted body, None when it does not change."""
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").lower()
        if text.lstrip()[:1] in ("{", "[") or "json" in ctype:
            return self._json(text)
        if ctype.startswith(_FORM):
            return self._form(text)
        return None

    def _may_hold_a_key(self, text: str) -> bool:
        # A key can only match where its letters occur in the text, unless escaped (\u0070 is "p", %70 too).
        low = text.lower()
        return "\\u" in low or "%" in low or any(k in low for k in self.keys)

    def _json(self, text: str) -> str | None:
        if not self._may_hold_a_key(text):
            return None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            self.counters["redact.body_not_json"] += 1
            return None
        n = redact_keys(doc, self.keys)
        if not n:
            return None
        self.counters["redact.body_values"] += n
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    def _form(self, text: str) -> str | None:
        if not self._may_hold_a_key(text):
            return None
        fields = text.split("&")
        n = 0
        for i, field in enumerate(fields):
            name = field.partition("=")[0]
            if unquote_plus(name).lower() in self.keys:
                fields[i] = name + "=" + _FORM_REDACTED
                n += 1
        if not n:
            return None
        self.counters["redact.body_values"] += n
        return "&".join(fields)


def redact_keys(doc, keys: frozenset[str]) -> int:
    """Replace, in place, the value of every object key in ``keys`` (lower-case)
    at any depth of a parsed JSON document; how many were replaced. Iterative:
    a document nested as deep as the parser allows must not exhaust the stack."""
    n = 0
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key.lower() in keys:
                    node[key] = REDACTED  # a value replaced, the dict's size unchanged: safe while iterating
                    n += 1
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return n
