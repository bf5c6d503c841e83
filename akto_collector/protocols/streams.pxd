# Compiled form of streams.py (see docs/ARCHITECTURE.md, "Compiled core").
# Keep the attribute list equal to ConnectionStream.__slots__ (a unit test checks).

cdef class ConnectionStream:
    cdef public object conn, limits, tls, finished, last_seen, proto
    cdef public object _counters, _role_hint, _plain_seen, _pos, _parser, _guessed

    cpdef on_event(self, ev)
    cpdef on_data(self, ts, d, call_pos, total, offset, flags, data, proto)
