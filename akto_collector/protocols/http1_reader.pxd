# Compiled form of http1_reader.py (see docs/ARCHITECTURE.md, "Compiled core"):
# the reader becomes an extension type, so its fields are C struct members
# instead of slot lookups. Keep the attribute list equal to __slots__ (a unit
# test checks). Its owner (an http1.Http1Parser) is called through Python:
# typing it here would need the two .pxd files to cimport each other.

cimport cython

from akto_collector.protocols.http1_syntax cimport (
    body_framing, content_length, head_end, parse_fields, plain_request_line,
)

cdef class MessageReader:
    cdef public object kind, direction, _limits, _counters, _owner
    cdef public object _state, _buf, _buf_ts, _scan, _line_ok, _line_start
    cdef public object _msg, _is_req, _parts, _kept, _size, _cut, _remaining
    cdef public object _coding, _taken, _upgrade, _alts, _alt_ts, _candidate

    # Called per message: C calls instead of method lookups (still callable from Python).
    cpdef _reset_message(self)
    cpdef feed(self, data, ts, call_start=*)
    cpdef _read_head(self, b, i, n, old, ts)
    @cython.locals(rb=bytes, p=cython.p_uchar, text=str, first=str, headers=list, n=Py_ssize_t, first_end=Py_ssize_t,
                   pos=Py_ssize_t, le=Py_ssize_t, end=Py_ssize_t, k=Py_ssize_t, a=Py_ssize_t, c=int,
                   names=int, j=int, high=int, h=cython.ulonglong, prime=cython.ulonglong, hashes=cython.ulonglong[32])
    cpdef _parse_head(self, raw, ts)
    cpdef _frame_body(self, framing, cl)
    cpdef _take(self, b, i, j)
    cpdef _read_chunk_size(self, b, i, n)
    cpdef _read_chunk_end(self, b, i, n)
    cpdef _complete(self)
    cpdef _finish(self, msg, body, size)
