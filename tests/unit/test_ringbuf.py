"""RingReader on a memfd laid out as the kernel lays out a ring buffer map.

The kernel maps the data area twice in a row; a memfd cannot, so the tests
write every byte of the data area at both places.
"""

from __future__ import annotations

import mmap
import os
import select
import struct

import pytest

from akto_collector.kernel.records import HDR_SIZE, LEN_OFFSET, RECORD
from akto_collector.kernel.ringbuf import RingReader

PAGE = mmap.PAGESIZE
SIZE = 4 * PAGE
BUSY, DISCARD = 1 << 31, 1 << 30


class FakeRing:
    def __init__(self):
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.mem = mmap.mmap(self.fd, 2 * PAGE + 2 * SIZE)
        self.prod = 0

    def _write(self, pos: int, data: bytes) -> None:
        for i, byte in enumerate(data):  # both copies of the data area
            off = (pos + i) % SIZE
            self.mem[2 * PAGE + off] = byte
            self.mem[2 * PAGE + SIZE + off] = byte

    def add(self, payload: bytes, slot: int, flags: int = 0) -> int:
        """A record of ``slot`` bytes whose first HDR_SIZE bytes say len(payload) are used."""
        pos = self.prod
        record = RECORD.pack(1, 2, 3, 4, 5, 6, 7, len(payload), 1, 0, 0, 0, 0, 0) + payload
        self._write(pos, struct.pack("<II", slot | flags, 0) + record.ljust(slot, b"\xee"))
        self.prod = pos + ((slot + 15) & ~7)
        self.mem[PAGE:PAGE + 8] = struct.pack("<Q", self.prod)
        return pos

    def set_flags(self, pos: int, slot: int, flags: int) -> None:
        self._write(pos, struct.pack("<I", slot | flags))

    @property
    def consumer(self) -> int:
        return struct.unpack_from("<Q", self.mem, 0)[0]


class FakeEpoll:
    """epoll refuses a memfd (EPERM); the reader only waits on it, which these tests never do."""

    def register(self, fd, events):
        self.fd = fd

    def poll(self, timeout):
        return []

    def close(self):
        pass


@pytest.fixture
def ring(monkeypatch):
    monkeypatch.setattr(select, "epoll", FakeEpoll)
    r = FakeRing()
    yield r
    os.close(r.fd)


def reader(ring):
    return RingReader(ring.fd, SIZE, head=HDR_SIZE, used_at=LEN_OFFSET)


def test_reads_records_copies_only_the_used_bytes_and_publishes_the_position(ring):
    ring.add(b"GET / HTTP/1.1\r\n\r\n", slot=512)
    ring.add(b"x" * 1000, slot=1024 + HDR_SIZE)
    r = reader(ring)
    out: list[bytes] = []
    assert r.drain(out) == 2
    assert [len(o) for o in out] == [HDR_SIZE + 18, HDR_SIZE + 1000]
    assert out[0][HDR_SIZE:] == b"GET / HTTP/1.1\r\n\r\n"
    assert ring.consumer == ring.prod
    assert r.pending_bytes() == 0
    assert r.drain(out) == 0
    r.close()


def test_stops_at_a_record_still_being_written_and_resumes_after_commit(ring):
    ring.add(b"a", slot=512)
    busy = ring.add(b"b", slot=512, flags=BUSY)
    ring.add(b"c", slot=512)
    r = reader(ring)
    out: list[bytes] = []
    assert r.drain(out) == 1
    assert ring.consumer == busy
    ring.set_flags(busy, 512, 0)
    assert r.drain(out) == 2
    assert [o[HDR_SIZE:] for o in out] == [b"a", b"b", b"c"]
    r.close()


def test_skips_discarded_records(ring):
    ring.add(b"a", slot=512, flags=DISCARD)
    ring.add(b"b", slot=512)
    out: list[bytes] = []
    r = reader(ring)
    assert r.drain(out) == 2
    assert [o[HDR_SIZE:] for o in out] == [b"b"]
    r.close()


def test_a_record_wrapping_past_the_end_is_read_whole(ring):
    r = reader(ring)
    out: list[bytes] = []
    while ring.prod + 600 < SIZE:  # fill close to the end, consume as we go
        ring.add(b"f", slot=512)
        r.drain(out)
    out.clear()
    ring.add(bytes(range(256)) * 8, slot=2048 + HDR_SIZE)  # crosses the end of the data area
    assert r.drain(out) == 1
    assert out[0][HDR_SIZE:] == bytes(range(256)) * 8
    assert ring.consumer == ring.prod > SIZE
    r.close()


def test_size_must_be_a_power_of_two(ring):
    with pytest.raises(ValueError, match="power of two"):
        RingReader(ring.fd, 3 * PAGE, head=HDR_SIZE, used_at=LEN_OFFSET)
