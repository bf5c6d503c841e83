"""Our HPACK decoder against the hpack package's encoder and decoder; the partial table when joined mid-way."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hpack import Decoder, Encoder
from hpack.hpack import decode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from akto_collector.protocols.hpack import HeaderDecoder, HpackError, huffman_decode

PATHS = ["/", "/index.html", "/api/v1/users", "/api/v1/orders/{n}", "/search?q={n}", "/static/app.{n}.js"]
AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", "okhttp/4.12", "grpc-go/1.60"]


def header_sequence(n: int, seed: int = 7):
    """``n`` request header lists as a busy client sends them: repeats, new values, sensitive fields."""
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        h = [(":method", rnd.choice(["GET", "GET", "POST", "PUT"])), (":scheme", "https"),
             (":path", rnd.choice(PATHS).format(n=rnd.randrange(40))),
             (":authority", rnd.choice(["api.example.com", "shop.internal:8443"]))]
        h.append(("user-agent", rnd.choice(AGENTS)))
        if rnd.random() < 0.6:
            h.append(("accept", rnd.choice(["*/*", "application/json", "text/html,application/xhtml+xml"])))
        if rnd.random() < 0.5:
            h.append(("x-request-id", f"{rnd.getrandbits(64):016x}"))
        if rnd.random() < 0.3:
            h.append(("authorization", f"Bearer {rnd.getrandbits(96):024x}", True))  # never indexed
        if rnd.random() < 0.3:
            h.append(("cookie", f"session={rnd.randrange(8)}; theme=dark"))
        if rnd.random() < 0.2:
            h.append((f"x-custom-{rnd.randrange(6)}", "v" * rnd.randrange(1, 300)))
        if rnd.random() < 0.05:
            h.append(("x-huge", "h" * rnd.randrange(1000, 3000)))  # larger than what is left: evictions
        out.append(h)
    return out


def encode_sequence(headers, seed: int = 3, resize: bool = True):
    """Blocks from one hpack Encoder: Huffman on and off, table size updates now and then."""
    rnd = random.Random(seed)
    enc = Encoder()
    blocks = []
    for h in headers:
        if resize and rnd.random() < 0.08:
            enc.header_table_size = rnd.choice([0, 256, 1024, 4096, 4096])
        blocks.append(enc.encode(h, huffman=rnd.random() < 0.7))
    return blocks


def truth_of(blocks):
    dec = Decoder()
    dec.max_allowed_table_size = 1 << 16
    return [dec.decode(b) for b in blocks]


SEQ = header_sequence(160)
BLOCKS = encode_sequence(SEQ)
TRUTH = truth_of(BLOCKS)


def test_whole_sequence_matches_hpack_exactly():
    counters = Counter()
    dec = HeaderDecoder(counters)
    dec.start()
    for block, truth in zip(BLOCKS, TRUTH):
        assert dec.decode(block) == truth
        assert dec.unknown == 0
    assert not counters


@pytest.mark.parametrize("huffman", [True, False])
def test_many_requests_one_table(huffman):
    enc = Encoder()
    dec = HeaderDecoder(Counter())
    dec.start()
    ref = Decoder()
    for h in header_sequence(60, seed=huffman):
        block = enc.encode(h, huffman=huffman)
        assert dec.decode(block) == ref.decode(block)
    assert dec.entries > 0


# -- the partial table ---------------------------------------------------------------


class Entry:
    """A dynamic entry in the reference model: the block that inserted it, where its name came from."""

    __slots__ = ("origin", "name_src", "size")

    def __init__(self, origin, name_src, size):
        self.origin, self.name_src, self.size = origin, name_src, size

    def known(self, k: int) -> bool:
        return self.origin >= k and (self.name_src is None or self.name_src.known(k))


def _skip_string(b, i):
    n, k = decode_integer(b[i:], 7)
    return i + k + n


def reference_model(blocks, truth):
    """For each block, per field: the dynamic entry it depends on (or None). An independent
    reading of the representations, with HPACK's eviction, so the test does not trust the decoder."""
    table: list = []  # newest first
    size, maxsize = 0, 4096
    out = []
    for m, (b, fields) in enumerate(zip(blocks, truth)):
        deps = []
        i = 0
        f = 0
        while i < len(b):
            c = b[i]
            if c & 0x20 and not c & 0xC0:  # size update
                v, k = decode_integer(b[i:], 5)
                i += k
                maxsize = v
                while size > maxsize:
                    size -= table.pop().size
                continue
            prefix, insert = (7, False) if c & 0x80 else ((6, True) if c & 0x40 else (4, False))
            v, k = decode_integer(b[i:], prefix)
            i += k
            dep = table[v - 62] if v >= 62 else None
            if not c & 0x80:
                if v == 0:
                    i = _skip_string(b, i)
                i = _skip_string(b, i)
            deps.append(dep)
            if insert:
                name, value = fields[f]
                s = len(name.encode()) + len(value.encode()) + 32
                while table and size + s > maxsize:
                    size -= table.pop().size
                if s <= maxsize:
                    table.insert(0, Entry(m, dep, s))
                    size += s
            f += 1
        assert f == len(fields)
        out.append(deps)
    return out


MODEL = reference_model(BLOCKS, TRUTH)


def joined_at(k: int, blocks=BLOCKS, counters=None):
    dec = HeaderDecoder(Counter() if counters is None else counters)
    return [dec.decode(b) for b in blocks[k:]]


def test_joined_mid_way_at_every_block_boundary():
    unknown_seen = 0
    for k in range(len(BLOCKS)):
        counters = Counter()
        got = joined_at(k, counters=counters)
        n_unknown = 0
        for m, fields in enumerate(got, k):
            assert fields is not None
            assert len(fields) == len(TRUTH[m])
            for j, field in enumerate(fields):
                dep = MODEL[m][j]
                if dep is not None and not dep.known(k):
                    assert field is None, (k, m, j)
                    n_unknown += 1
                else:
                    assert field == TRUTH[m][j], (k, m, j)
        assert counters["http2.fields_unknown"] == n_unknown
        assert counters["http2.hpack_bad_index"] == counters["http2.hpack_error"] == 0
        unknown_seen += n_unknown
    assert unknown_seen > 100  # the test did meet unknown fields


def test_a_lost_block_makes_the_table_unknown_and_it_refills():
    for g in (5, 40, 100):
        counters = Counter()
        dec = HeaderDecoder(counters)
        dec.start()
        for b in BLOCKS[:g]:
            dec.decode(b)
        dec.reset()  # block g fell in a gap
        after = [dec.decode(b) for b in BLOCKS[g + 1:]]
        assert after == joined_at(g + 1)


def test_our_memory_cap_below_the_table_only_forgets():
    counters = Counter()
    dec = HeaderDecoder(counters, cap=600)
    dec.start()
    for m, b in enumerate(BLOCKS):
        fields = dec.decode(b)
        for j, field in enumerate(fields):
            assert field is None or field == TRUTH[m][j]
    assert counters["http2.hpack_table_capped"] > 0 and counters["http2.fields_unknown"] > 0
    assert dec.buffered <= 600


def test_settings_limit_bounds_a_table_joined_mid_way():
    dec = HeaderDecoder(Counter())
    dec.set_limit(256)
    enc = Encoder()
    enc.header_table_size = 256
    for h in header_sequence(30):
        dec.decode(enc.encode(h))
        assert dec.buffered <= 256


# -- bounds and bad input ---------------------------------------------------------------


def test_hpack_bomb_is_dropped_and_the_table_stays_in_step():
    enc = Encoder()
    counters = Counter()
    dec = HeaderDecoder(counters, max_list=16 << 10)
    dec.start()
    assert dec.decode(enc.encode([("x-bomb", "B" * 4000)])) == [("x-bomb", "B" * 4000)]
    assert dec.decode(bytes([0x80 | 62]) * 200) is None  # 200 references to a 4 KB entry
    assert counters["http2.dropped.header_list_too_large"] == 1
    assert dec.decode(enc.encode([("x-bomb", "B" * 4000), ("a", "b")])) == [("x-bomb", "B" * 4000), ("a", "b")]


def test_table_size_above_the_negotiated_limit():
    counters = Counter()
    dec = HeaderDecoder(counters)
    dec.start()
    dec.set_limit(100)
    enc = Encoder()
    enc.header_table_size = 8192  # the encoder ignores the limit
    assert dec.decode(enc.encode([("a", "1")])) == [("a", "1")]
    assert counters["http2.hpack_table_size_over_limit"] == 1 and not dec.complete and dec.entries == 1
    # Joined mid-way, the limit is not known to be the encoder's: not flagged.
    counters = Counter()
    mid = HeaderDecoder(counters)
    mid.set_limit(100)
    enc = Encoder()
    enc.header_table_size = 8192
    mid.decode(enc.encode([("a", "1")]))
    assert counters["http2.hpack_table_size_over_limit"] == 0


def test_size_update_to_zero_makes_a_partial_table_complete():
    enc = Encoder()
    for h in header_sequence(10):
        enc.encode(h)
    dec = HeaderDecoder(Counter())
    enc.header_table_size = 0
    enc.header_table_size = 4096
    dec.decode(enc.encode([("a", "1")]))
    assert dec.complete
    assert dec.decode(enc.encode([("a", "1")])) == [("a", "1")]


@pytest.mark.parametrize("block,reason", [
    (b"\x80", "http2.hpack_error"),  # index 0
    (b"\x41\x85\xff\xff\xff\xff\xff", "http2.hpack_error"),  # Huffman with EOS
    (b"\x41\x0aabc", "http2.hpack_error"),  # string beyond the block
    (b"\xff" + b"\xff" * 10, "http2.hpack_error"),  # an endless integer
    (b"\x40\x01a", "http2.hpack_error"),  # truncated literal
    (b"\xbf", "http2.hpack_bad_index"),  # index 62 in an empty, complete table
])
def test_bad_blocks_are_counted_and_the_table_becomes_unknown(block, reason):
    counters = Counter()
    dec = HeaderDecoder(counters)
    dec.start()
    assert dec.decode(block) is None
    assert counters[reason] == 1 and not dec.complete


def test_an_unknown_index_in_a_partial_table_is_not_an_error():
    counters = Counter()
    dec = HeaderDecoder(counters)
    assert dec.decode(b"\xbf\x82") == [None, (":method", "GET")]
    assert counters["http2.fields_unknown"] == 1 and counters["http2.hpack_error"] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_random_blocks_never_raise(blocks, complete):
    dec = HeaderDecoder(Counter(), max_list=4096, cap=4096)
    if complete:
        dec.start()
    for b in blocks:
        out = dec.decode(b)
        assert out is None or isinstance(out, list)
        assert dec.buffered <= 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_huffman_round_trip(data):
    enc = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    assert huffman_decode(enc.encode(data)) == data


def test_invalid_huffman_padding():
    with pytest.raises(HpackError):
        huffman_decode(b"\x00")  # a zero padding is not EOS bits
    assert huffman_decode(b"") == b""
