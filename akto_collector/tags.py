"""The message's ``tag`` field, and how a process's tag reaches the workers.

``tag`` is a JSON object string of string values; the Akto runtime turns
each key into a request header ``x-akto-k8s-<key>``. It is made of, from
weakest to strongest (a later source wins a key): the fixed tags of
``AKTO_INJECT_TAGS``, the pod's labels (from the Kubernetes API, when
enabled), and what the collector found itself about the pod (``POD_KEYS``),
which no label may mask.

Processes are known in the supervisor, messages are encoded in the workers:
the supervisor sends a worker a process's tag as a record of its own kind
(``KIND_TAGS``) in the worker's record stream, ahead of the records it
applies to, as the kernel sends a process's comm in its OPEN/ADDR records.
A process without a record of its own has the fixed tags only (``base_tag``).

Pure: no I/O; config, the supervisor and the workers share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from akto_collector.kernel.records import RECORD

# Record kinds from 128 up are the supervisor's own: the kernel's are small
# (kernel/records.py) and never reach this range.
KIND_TAGS = 128

# What the collector found about a process's pod, under these keys.
POD = "pod"  # the pod's name
NAMESPACE = "namespace"
POD_UID = "pod_uid"
CONTAINER_ID = "container_id"  # the runtime's id, 64 hex digits
CONTAINER = "container"  # the container's name in the pod spec (from the API only)
POD_KEYS = (POD, NAMESPACE, POD_UID, CONTAINER_ID, CONTAINER)

_KEY_FORBIDDEN = frozenset("=; \t\r\n\"")


def parse_inject_tags(raw: str) -> tuple[tuple[str, str], ...]:
    """``AKTO_INJECT_TAGS``: ``key=value`` pairs separated by ``;`` (Akto's
    collector's syntax), whitespace around keys and values ignored, an empty
    value allowed, a trailing ``;`` too. Raises ValueError naming what is wrong:
    a pair without ``=``, an empty key, a key with spaces or quotes, a key given twice."""
    out: dict[str, str] = {}
    for number, pair in enumerate(raw.split(";"), 1):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"pair {number} ({pair!r}) has no '='; expected key=value[;key=value...]")
        if not key:
            raise ValueError(f"pair {number} ({pair!r}) has an empty key; expected key=value[;key=value...]")
        if any(c in _KEY_FORBIDDEN or not c.isprintable() for c in key):
            raise ValueError(f"key {key!r}: expected a key without spaces, quotes, '=' or ';'")
        if key in out:
            raise ValueError(f"key {key!r} is given twice; expected each key once")
        out[key] = value.strip()
    return tuple(out.items())


def tag_string(inject: Iterable[tuple[str, str]], labels: Mapping[str, str] | None = None,
               pod: Mapping[str, str] | None = None) -> str:
    """The ``tag`` value: the fixed tags, then the labels, then the pod's own keys over them."""
    merged = dict(inject)
    if labels:
        merged.update(labels)
    if pod:
        merged.update(pod)
    return orjson.dumps(merged).decode()


def base_tag(inject: Iterable[tuple[str, str]]) -> str:
    """The tag of a process that is in no pod (or not known): the fixed tags alone."""
    return tag_string(inject)


def tags_record(pid: int, tag: str | None) -> bytes:
    """The record telling a worker the tag of ``pid``'s messages from here on;
    ``None`` (an empty payload): forget it, back to the fixed tags."""
    payload = tag.encode() if tag is not None else b""
    return RECORD.pack(0, 0, 0, pid, 0, 0, 0, len(payload), KIND_TAGS, 0, 0, 0, 0, 0) + payload
