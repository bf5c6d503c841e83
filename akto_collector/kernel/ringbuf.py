"""Reads a BPF ring buffer straight from its memory mapping.

Why not bcc's ``ring_buffer_consume``: it calls a Python function through
ctypes for every record, about 2 µs each here, several times what the rest
of the supervisor spends on a record. The mapping itself is kernel ABI
(kernel/bpf/ringbuf.c), the same one libbpf's ``ring_buffer__consume``
reads:

- offset 0, one page, read-write: the consumer position (u64);
- offset one page, read-only: a page with the producer position (u64),
  then the data area mapped twice in a row, so that a record wrapping past
  the end is still contiguous;
- each record: a u32 length whose top bits say "being written" (BUSY) and
  "discarded" (DISCARD), a u32 page offset, then the data, padded to 8 bytes.

Positions only grow; ``pos & (size - 1)`` is the offset in the data area.
We stop at the first record still being written (the kernel reserves in
order, so everything after it is newer) and publish the consumer position
as we go, so the kernel regains room while a long drain runs.
Ordering: libbpf reads the producer position and each header with acquire
loads and publishes the consumer position with a release store. On x86-64
(the only architecture the set-up supports: linux-headers-amd64) plain
aligned loads and stores give exactly that (loads are not reordered with
loads, stores not with earlier loads). On arm64 this reader would need
real acquire/release operations; do not port it there without them.

Records are reserved in a few fixed slot sizes, so a record's own header
says how much of its slot is used (``used_at``: the offset of a u16 count
of used bytes after the first ``head`` bytes); only those are copied. (A
gathered call, sent by ``bpf_ringbuf_output``, is a record of its exact
size: used and length agree.)
This module imports nothing from bcc: it needs only the map's fd (the unit
tests lay a ring out on a memfd).
"""

from __future__ import annotations

import mmap
import platform
import select

_BUSY = 1 << 31
_DISCARD = 1 << 30
_LEN_MASK = ~(_BUSY | _DISCARD) & 0xFFFFFFFF
_PUBLISH_EVERY = 256  # records between two stores of the consumer position


class RingReader:
    """Consumes the records of one BPF_MAP_TYPE_RINGBUF map."""

    __slots__ = ("size", "_mask", "_page", "_head", "_used_at", "_consumer", "_data",
                 "_cons", "_prod", "_u32", "_u16", "_epoll")

    def __init__(self, map_fd: int, size: int, head: int, used_at: int) -> None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise ValueError(f"the ring buffer reader is written for x86-64's memory ordering, not {platform.machine()}")
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size must be a power of two, not {size}")
        if head % 2 or used_at % 2:
            raise ValueError("the used-bytes field must be 2-byte aligned")
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        self._page = page
        self._head = head
        self._used_at = used_at
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # Positions and headers are read and written through native-format
        # views: one aligned load or store each. struct's "<Q" goes byte by
        # byte, and a position torn by a concurrent update (the kernel's or
        # ours) makes the kernel's reserve fail or us read past the producer.
        self._cons = memoryview(self._consumer).cast("Q")
        data = memoryview(self._data)
        self._prod = data[:8].cast("Q")
        self._u32 = data.cast("I")
        self._u16 = data.cast("H")
        self._epoll = select.epoll()
        # Edge-triggered: a wake-up ends one wait. Level-triggered, epoll
        # would ask the ring again at every later wait and return at once
        # while any record is unread, which under traffic is nearly always:
        # the paced wait would not be kept until a wait found the ring empty.
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def wait(self, timeout: float) -> bool:
        """Sleep until the kernel signals data (only records submitted with a
        wake-up do), or ``timeout`` seconds; whether it signalled."""
        try:
            return bool(self._epoll.poll(timeout))
        except InterruptedError:  # a signal: the caller looks at its queue
            return False

    def pending_bytes(self) -> int:
        return self._prod[0] - self._cons[0]

    def drain(self, out: list) -> int:
        """Append the data of every complete record waiting (as bytes) to ``out``.

        Returns how many records were consumed (discarded ones included).
        """
        data = self._data
        mask = self._mask
        base = self._page
        head_size = self._head
        used_at = self._used_at + 8
        append = out.append
        cons = self._cons[0]
        prod = self._prod[0]
        n = 0
        while cons < prod:
            off = base + (cons & mask)
            word = self._u32[off >> 2]
            if word & _BUSY:
                break
            length = word & _LEN_MASK
            if not word & _DISCARD:
                start = off + 8
                used = head_size + self._u16[(off + used_at) >> 1]
                append(data[start:start + (used if used < length else length)])
            cons += (length + 15) & ~7  # header + data, padded to 8
            n += 1
            if n % _PUBLISH_EVERY == 0:
                self._cons[0] = cons
        if n:
            self._cons[0] = cons
        return n

    def close(self) -> None:
        self._epoll.close()
        # Dropping the views releases the mappings (compiled, they are typed
        # memoryviews, which have no release()); the mappings close then.
        self._cons = None
        self._prod = None
        self._u32 = None
        self._u16 = None
        self._consumer.close()
        self._data.close()
