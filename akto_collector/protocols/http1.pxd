# Compiled form of http1.py (see docs/ARCHITECTURE.md, "Compiled core"):
# the parser becomes an extension type, so its fields are C struct members
# instead of slot lookups. Keep the attribute list equal to the class's
# __slots__ (a unit test checks).

cdef class Http1Parser:
    cdef public object conn, role, tls, out, pending, early, switch, _counters, _max_pending, _readers, _requests

    cpdef feed(self, direction, data, ts, call_start)
    cpdef take(self)
    cpdef method_for_response(self)
    cpdef message_done(self, msg, is_request, upgrade)
