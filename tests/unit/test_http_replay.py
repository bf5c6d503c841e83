"""Recorded streams (tests/data/streams) replayed in many chunkings must give the same pairs.

Also holds the small helpers the other core tests import: loading a recorded
stream and turning byte steps into DataEvents the way the kernel numbers them.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from akto_collector.events import FLAG_CUT, RECV, SEND, ConnId, DataEvent
from akto_collector.protocols.streams import ConnectionStream, CoreLimits

DATA = Path(__file__).resolve().parent.parent / "data"
STREAMS = sorted(p.stem for p in (DATA / "streams").glob("*.json"))
CONN = ConnId(4242, 17, 1)
_DIRS = {"send": SEND, "recv": RECV}


def load(name: str) -> dict:
    return json.loads((DATA / "streams" / f"{name}.json").read_text())


def steps_of(doc: dict) -> list:
    """[(direction, bytes) | "close", ...] in kernel order."""
    out = []
    for s in doc["steps"]:
        if s.get("close"):
            out.append("close")
        elif "text" in s:
            out.append((_DIRS[s["dir"]], s["text"].encode()))
        else:
            out.append((_DIRS[s["dir"]], base64.b64decode(s["b64"])))
    return out


class Wire:
    """Numbers the bytes of each direction as the kernel does and makes DataEvents."""

    def __init__(self, conn: ConnId = CONN):
        self.conn = conn
        self.pos = {SEND: 0, RECV: 0}

    def call(self, direction: int, data: bytes, ts: float = 1.0, flags: int = 0) -> DataEvent:
        """One syscall that copied all its bytes."""
        ev = DataEvent(self.conn, ts, direction, self.pos[direction], len(data), 0, flags, data)
        self.pos[direction] += len(data)
        return ev

    def pieces(self, direction: int, data: bytes, cuts: list[int], ts: float = 1.0, flags: int = 0) -> list[DataEvent]:
        """One syscall delivered as several pieces (offsets inside the call)."""
        base = self.pos[direction]
        bounds = [0, *cuts, len(data)]
        self.pos[direction] += len(data)
        return [
            DataEvent(self.conn, ts, direction, base, len(data), a, flags, data[a:b])
            for a, b in zip(bounds, bounds[1:])
            if b > a
        ]

    def cut_call(self, direction: int, data: bytes, copied: int, ts: float = 1.0) -> DataEvent:
        """A syscall of len(data) bytes of which only the first ``copied`` were copied."""
        ev = DataEvent(self.conn, ts, direction, self.pos[direction], len(data), 0, FLAG_CUT, data[:copied])
        self.pos[direction] += len(data)
        return ev

    def lose(self, direction: int, n: int) -> None:
        """n bytes of this direction never reach user space (ring buffer full)."""
        self.pos[direction] += n


def run(doc: dict, split=None, as_pieces: bool = False, limits: CoreLimits | None = None):
    """Feed a recorded stream; ``split(step_index, data) -> cut offsets``. Returns (exchanges, counters, cs)."""
    counters: Counter = Counter()
    cs = ConnectionStream(CONN, limits or CoreLimits(), counters, role_hint=doc.get("role_hint", 0))
    wire = Wire()
    out = []
    for k, st in enumerate(steps_of(doc)):
        ts = 1000.0 + k
        if st == "close":
            out += cs.on_close(ts)
            continue
        direction, data = st
        cuts = split(k, data) if split else []
        if as_pieces:
            events = wire.pieces(direction, data, cuts, ts)
        else:
            bounds = [0, *cuts, len(data)]
            events = [wire.call(direction, data[a:b], ts) for a, b in zip(bounds, bounds[1:]) if b > a]
        for ev in events:
            out += cs.on_event(ev)
    return out, counters, cs


def summary(ex) -> dict:
    return {
        "method": ex.request.method,
        "target": ex.request.target,
        "status": ex.response.status,
        "request_body": ex.request.body.decode("utf-8", "replace"),
        "response_body": ex.response.body.decode("utf-8", "replace"),
    }


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_gives_expected_pairs(name):
    doc = load(name)
    out, counters, cs = run(doc)
    assert [summary(ex) for ex in out] == [
        {k: e[k] for k in ("method", "target", "status", "request_body", "response_body")} for e in doc["expect"]
    ]
    for ex, e in zip(out, doc["expect"]):
        assert not ex.request.body_cut and not ex.response.body_cut
        if "response_trailer" in e:
            assert tuple(e["response_trailer"]) in ex.response.headers
        if "request_header" in e:
            assert tuple(e["request_header"]) in ex.request.headers
    assert cs.finished == doc.get("finished", any(s == "close" for s in steps_of(doc)))
    assert counters["http.malformed"] == 0 or name in ("binary_noise",)


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_split_at_every_byte(name):
    doc = load(name)
    whole, _, _ = run(doc)
    sizes = [len(s[1]) if s != "close" else 0 for s in steps_of(doc)]
    for k, size in enumerate(sizes):
        for p in range(1, size):
            got, _, _ = run(doc, split=lambda i, d, k=k, p=p: [p] if i == k else [])
            assert got == whole, (name, k, p)
            got, _, _ = run(doc, split=lambda i, d, k=k, p=p: [p] if i == k else [], as_pieces=True)
            assert got == whole, (name, k, p, "pieces")


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_random_chunkings(name):
    doc = load(name)
    whole, _, _ = run(doc)
    rnd = random.Random(name)
    for _ in range(30):
        def split(i, data):
            n = len(data)
            if n < 2:
                return []
            return sorted(rnd.sample(range(1, n), k=min(n - 1, rnd.randint(1, 12))))

        assert run(doc, split=split)[0] == whole
        assert run(doc, split=split, as_pieces=True)[0] == whole


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_byte_by_byte(name):
    doc = load(name)
    whole, _, cs_whole = run(doc)
    got, _, cs = run(doc, split=lambda i, d: list(range(1, len(d))))
    assert got == whole
    assert cs.role == cs_whole.role
