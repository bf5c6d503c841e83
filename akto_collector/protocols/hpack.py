"""HPACK (RFC 7541) decoding with a partial dynamic table: header blocks in, fields out.

Strategy. One ``HeaderDecoder`` per direction of a connection, fed every
header block of that direction in order (HEADERS, PUSH_PROMISE, with their
CONTINUATIONs). It is our own because the collector may join a connection
mid-way, when the encoder's dynamic table already holds entries we never saw;
the ``hpack`` package (python-hyper) raises on such an index, so only its
static table and Huffman code are reused here. Nothing raises: an encoding
error is counted and makes the table unknown.

What is exact, and why. HPACK numbers dynamic entries from the newest (index
62 is the entry inserted last), and every table operation other than an
insertion removes entries from the *oldest* end only: eviction on insertion,
eviction on a size update, and the emptying of the table by an entry larger
than the maximum. So whatever the table held when we joined is older than
everything inserted afterwards, and at any moment the encoder's table, newest
first, is a prefix of the list of insertions we saw (``_entries``, kept newest
last) followed by what is left of the entries from before. Hence:

* a reference to dynamic index ``62 + k - 1`` with ``k <= len(_entries)`` is
  the k-th newest insertion we saw, exactly, whatever the sizes: the encoder
  only references entries still in its table, and those are at the same
  distance from the newest as in our list;
* a reference beyond our list is to an entry from before joining (or one we
  dropped ourselves): unknown, counted as ``http2.fields_unknown``, never
  guessed. A literal naming an unknown entry is unknown too; if it is also
  inserted, a placeholder keeps the numbering of the later entries exact;
* the numbering only needs the *count* of insertions since joining, which a
  decoded block gives exactly. Sizes only decide when old entries may be
  forgotten, and forgetting too late (keeping an entry the encoder evicted)
  or too early (losing one it still has) never changes a known index: too
  late, the encoder never references it; too early, it reads as unknown.

So the table keeps every insertion it saw while it fits in the bound it
knows: the maximum size the encoder announced in a size update seen here
(exact, eviction as HPACK does it), else the SETTINGS_HEADER_TABLE_SIZE the
decoding side announced (an upper bound of the encoder's), else ``cap`` (our
own memory bound). A placeholder's size is unknown; its lower bound (32 +
the value's length) is used, which at worst keeps entries longer than the
encoder does: harmless, as above.

``complete`` says the table holds no entry from before (decoding started at
the connection's start, or a size update to 0 or an entry larger than a known
maximum emptied it): then a reference beyond our list is a real error
(``http2.hpack_bad_index``) and a size update above the negotiated limit is a
violation (``http2.hpack_table_size_over_limit``); a table joined mid-way
checks neither, as it cannot. A header block lost in a gap loses insertions
newer than our entries and would shift every index by an unknown amount: the
owner then calls ``reset()``, and the table refills from the next insertions
as when joining. Decoding with shifted indices is never done: it would emit
wrong fields silently.
"""

from __future__ import annotations

from hpack.huffman_table import HUFFMAN_TABLE
from hpack.table import HeaderTable

# Static table (RFC 7541 Appendix A) as str, 1-based; and each entry's size.
_STATIC = (None,) + tuple((n.decode("ascii"), v.decode("ascii")) for n, v in HeaderTable.STATIC_TABLE)
_STATIC_SIZES = (0,) + tuple(len(n) + len(v) + 32 for n, v in _STATIC[1:])
_N_STATIC = len(_STATIC)  # 62: the first dynamic index

DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value
_MAX_INT = 1 << 32  # HPACK integers beyond this are an attack or garbage

_HUFF_CACHE_MAX = 4096  # decoded Huffman strings remembered (common values recur across connections)
_huff_cache: dict = {}
_huff_next = None  # byte-wise Huffman automaton, built at first use (see _huffman_tables)
_huff_out = None
_huff_accept = None


class HpackError(Exception):
    """A header block that is not valid HPACK (internal: never leaves this module)."""


class HeaderDecoder:
    """Decodes the header blocks of one direction; a partial table when joined mid-way.

    ``decode(block)`` returns the block's fields in order, ``(name, value)``
    str pairs with ``None`` for each field that references an entry from
    before joining (``unknown`` counts them), or ``None`` when the block is
    unusable (an HPACK error: the table became unknown; a decoded list over
    ``max_list`` bytes: an HPACK bomb, the table stays in step).
    """

    __slots__ = ("complete", "unknown", "_counters", "_entries", "_sizes", "_used", "_max", "_limit",
                 "_prev_limit", "_cap", "_max_list")

    def __init__(self, counters, max_list: int = 65536, cap: int = 65536):
        self.complete = False  # no entry from before joining is left (see the module docstring)
        self.unknown = 0  # unknown fields in the last block
        self._counters = counters
        self._entries: list = []  # insertions seen, newest last: (name, value); name None when unknown
        self._sizes: list = []  # their sizes (a lower bound for a placeholder)
        self._used = 0  # sum of _sizes
        self._max = -1  # the encoder's maximum table size, from a size update seen (-1: unknown)
        self._limit = -1  # SETTINGS_HEADER_TABLE_SIZE of the decoding side (-1: unknown)
        self._prev_limit = -1  # the one before: the encoder may use it until it sees the new one
        self._cap = cap  # our own bound on the bytes of entries kept
        self._max_list = max_list  # bound on a decoded header list (RFC 7541 sizes)

    # -- what the connection tells us -----------------------------------------

    def start(self) -> None:
        """The direction is seen from the connection's start: the table is empty, 4096 bytes."""
        if self._entries:
            return  # blocks were decoded already: not the start after all
        self.complete = True
        self._max = DEFAULT_TABLE_SIZE
        if self._limit < 0:
            self._limit = DEFAULT_TABLE_SIZE

    def set_limit(self, size: int) -> None:
        """The decoding side sent SETTINGS_HEADER_TABLE_SIZE ``size``."""
        self._prev_limit = self._limit if self._limit >= 0 else DEFAULT_TABLE_SIZE
        self._limit = size
        if self._max < 0:
            self._trim(self._bound())

    def reset(self) -> None:
        """A header block was lost: every index may have shifted; forget the table."""
        self._entries = []
        self._sizes = []
        self._used = 0
        self._max = -1  # a size update may have been lost too
        self.complete = False

    @property
    def entries(self) -> int:
        """How many insertions are known (for tests and the memory budget)."""
        return len(self._entries)

    @property
    def buffered(self) -> int:
        return self._used

    # -- decoding ---------------------------------------------------------------

    def decode(self, block: bytes):
        try:
            fields, total = self._decode(block)
        except HpackError:
            self._counters["http2.hpack_error"] += 1
            self.unknown = 0
            self.reset()
            return None
        except IndexError:  # a block that ends inside a field
            self._counters["http2.hpack_error"] += 1
            self.unknown = 0
            self.reset()
            return None
        if total > self._max_list:
            # An HPACK bomb (a small block referencing large entries many
            # times): the table was kept in step, the fields are not handed on.
            self._counters["http2.dropped.header_list_too_large"] += 1
            return None
        return fields

    def _decode(self, block: bytes):
        """The fields of ``block`` and their total size (RFC 7541 section 4.1 accounting)."""
        fields: list = []
        append = fields.append
        entries = self._entries
        sizes = self._sizes
        ne = len(entries)
        bound = self._bound()
        n = len(block)
        i = 0
        total = 0
        unknown = 0
        while i < n:
            c = block[i]
            i += 1
            if c & 0x80:  # indexed field
                idx = c & 0x7F
                if idx == 0x7F:
                    idx, i = _integer(block, i, idx)
                if idx < _N_STATIC:
                    if not idx:
                        raise HpackError("index 0")
                    append(_STATIC[idx])
                    total += _STATIC_SIZES[idx]
                    continue
                k = idx - _N_STATIC + 1
                if k <= ne:
                    f = entries[-k]
                    if f[0] is not None:
                        append(f)
                        total += sizes[-k]
                        continue
                elif self.complete:
                    self._counters["http2.hpack_bad_index"] += 1
                    raise HpackError("index beyond the table")
                append(None)
                unknown += 1
                total += 32
                continue
            if c & 0x40:  # literal with incremental indexing
                idx = c & 0x3F
                if idx == 0x3F:
                    idx, i = _integer(block, i, idx)
                insert = True
            elif c & 0x20:  # dynamic table size update
                size = c & 0x1F
                if size == 0x1F:
                    size, i = _integer(block, i, size)
                self._resize(size)
                entries = self._entries  # a violation replaced the table
                sizes = self._sizes
                ne = len(entries)
                bound = self._bound()
                continue
            else:  # literal without indexing (0x00) or never indexed (0x10)
                idx = c & 0x0F
                if idx == 0x0F:
                    idx, i = _integer(block, i, idx)
                insert = False
            if not idx:
                name, i = _string(block, i, n)
            elif idx < _N_STATIC:
                name = _STATIC[idx][0]
            elif idx - _N_STATIC < ne:
                name = entries[_N_STATIC - 1 - idx][0]
            elif self.complete:
                self._counters["http2.hpack_bad_index"] += 1
                raise HpackError("name index beyond the table")
            else:
                name = None
            value, i = _string(block, i, n)
            if name is None:
                size = 32 + len(value)  # a lower bound: the name is unknown
                f = (None, value)  # inserted as a placeholder
                append(None)
                unknown += 1
            else:
                size = len(name) + len(value) + 32
                f = (name, value)
                append(f)
            total += size
            if insert:
                if 0 <= self._max < size:
                    self._insert(f, size)  # empties the table
                    entries = self._entries
                    sizes = self._sizes
                else:
                    entries.append(f)
                    sizes.append(size)
                    self._used += size
                    if self._used > bound:
                        self._trim(bound)
                ne = len(entries)
        self.unknown = unknown
        if unknown:
            self._counters["http2.fields_unknown"] += unknown
        return fields, total

    # -- the table ----------------------------------------------------------------

    def _bound(self) -> int:
        """The bytes of entries that may be kept: the best bound known of the encoder's table."""
        if self._max >= 0:
            bound = self._max
        elif self._limit >= 0:
            bound = self._limit if self._limit > self._prev_limit else self._prev_limit
        else:
            bound = self._cap
        return bound if bound < self._cap else self._cap

    def _insert(self, entry, size: int) -> None:
        if 0 <= self._max < size:
            # RFC 7541 section 4.4: an entry larger than the table empties it
            # and is not added. The maximum is known, so this is exact.
            self._entries = []
            self._sizes = []
            self._used = 0
            self.complete = True
            return
        self._entries.append(entry)
        self._sizes.append(size)
        self._used += size
        bound = self._bound()
        if self._used > bound:
            self._trim(bound)

    def _trim(self, bound: int) -> None:
        """Evict the oldest known entries until they fit in ``bound`` (as HPACK evicts)."""
        if self._used <= bound:
            return
        if self._max > self._cap and bound == self._cap:
            # Our memory bound is below the encoder's table: entries it still
            # has are forgotten, references to them will read as unknown.
            self._counters["http2.hpack_table_capped"] += 1
            self.complete = False
        sizes = self._sizes
        used = self._used
        k = 0
        while used > bound:
            used -= sizes[k]
            k += 1
        del self._entries[:k]
        del sizes[:k]
        self._used = used

    def _resize(self, size: int) -> None:
        """A dynamic table size update."""
        if self.complete and self._limit >= 0:
            limit = self._limit if self._limit > self._prev_limit else self._prev_limit
            if size > limit:
                # Above what the decoding side allowed (only checked where the
                # limit is known: a table joined mid-way cannot tell).
                self._counters["http2.hpack_table_size_over_limit"] += 1
                self.reset()
                return
        self._max = size
        self._trim(self._bound())
        if size == 0:
            self.complete = True  # everything, from before joining too, was evicted


def _integer(b, i: int, value: int):
    """An HPACK integer whose prefix was all ones (``value``): the continuation bytes from ``i``."""
    shift = 0
    while True:
        c = b[i]  # IndexError at the end: caught by decode
        i += 1
        value += (c & 0x7F) << shift
        if not c & 0x80:
            if value > _MAX_INT:
                raise HpackError("integer too large")
            return value, i
        shift += 7
        if shift > 35:
            raise HpackError("integer too long")


def _string(b, i: int, n: int):
    """A string literal at ``i``: (str, index after it)."""
    c = b[i]
    i += 1
    ln = c & 0x7F
    if ln == 0x7F:
        ln, i = _integer(b, i, ln)
    j = i + ln
    if j > n:
        raise HpackError("string beyond the block")
    raw = b[i:j]
    if c & 0x80:
        return huffman_text(raw), j
    try:
        return raw.decode("utf-8"), j
    except UnicodeDecodeError:
        return raw.decode("latin-1"), j  # obs-text: keep every byte as a character


def huffman_text(raw: bytes) -> str:
    """A Huffman-coded string literal as str (remembered: the same values recur across connections)."""
    s = _huff_cache.get(raw)
    if s is not None:
        return s
    data = huffman_decode(raw)
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        s = data.decode("latin-1")
    if len(_huff_cache) >= _HUFF_CACHE_MAX:
        _huff_cache.clear()
    _huff_cache[raw] = s
    return s


def huffman_decode(raw) -> bytes:
    """Undo the HPACK Huffman code (RFC 7541 Appendix B); HpackError if invalid.

    A byte-wise automaton derived from ``hpack``'s nibble-wise one: one
    table step per input byte instead of two.
    """
    nxt = _huff_next
    if nxt is None:
        _huffman_tables()
        nxt = _huff_next
    out = _huff_out
    res = bytearray()
    st = 0
    for c in raw:
        k = st | c
        st = nxt[k]
        res += out[k]
    if not _huff_accept[st >> 8]:
        raise HpackError("invalid Huffman string")  # a code failed, EOS, or bad padding
    return bytes(res)


def _huffman_tables() -> None:
    """Build the byte-wise automaton: state * 256 + byte -> next state * 256, output bytes.

    ``hpack``'s table has 256 states with 16 nibble transitions each; two
    nibble steps make a byte step. A failing transition goes to an extra
    state (256) that stays failed and is not accepting.
    """
    global _huff_next, _huff_out, _huff_accept
    fail = 256
    accept = [False] * 257
    accept[0] = True  # the empty string
    for st, flags, _sym in HUFFMAN_TABLE:
        if flags & 1 and not flags & 4:
            accept[st] = True
    rows = [s << 8 for s in range(257)]  # shared int objects: the table holds references only
    fail_row = rows[fail]
    nxt = [0] * (257 * 256)
    out = [b""] * (257 * 256)
    shared: dict = {}
    for s in range(256):
        base = s * 16
        for c in range(256):
            st1, f1, y1 = HUFFMAN_TABLE[base + (c >> 4)]
            if f1 & 4:
                nxt[(s << 8) | c] = fail_row
                continue
            st2, f2, y2 = HUFFMAN_TABLE[st1 * 16 + (c & 15)]
            if f2 & 4:
                nxt[(s << 8) | c] = fail_row
                continue
            o = (bytes((y1,)) if f1 & 2 else b"") + (bytes((y2,)) if f2 & 2 else b"")
            nxt[(s << 8) | c] = rows[st2]
            out[(s << 8) | c] = shared.setdefault(o, o)
    for c in range(256):
        nxt[fail_row | c] = fail_row
    _huff_next, _huff_out, _huff_accept = nxt, out, accept
