# Compiled form of streams.py (see docs/ARCHITECTURE.md, "Compiled core").
# Keep the attribute list equal to ConnectionStream.__slots__ (a unit test checks).

cimport cython
from akto_collector.http1 cimport ExchangePairer, MessageReader

cdef class ConnectionStream:
    cdef public object conn, limits, role, tls, finished, last_seen
    cdef public object _counters, _role_hint, _plain_seen, _pos, _readers, _pairer

    # Per event: the reader and pairer typed, so their methods are C calls.
    @cython.locals(reader=MessageReader, pairer=ExchangePairer)
    cpdef on_event(self, ev)
