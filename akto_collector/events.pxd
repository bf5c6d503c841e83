# Compiled form of events.py (see docs/ARCHITECTURE.md, "Compiled core"):
# the per-message classes become extension types with C-level fields.
# Keep each attribute list equal to the class's __slots__ (a unit test checks).

cdef class _Record:
    pass

cdef class HttpRequest(_Record):
    cdef public object method, target, version, headers, body, body_cut, body_size, ts, grpc_sizes, host_name

cdef class HttpResponse(_Record):
    cdef public object version, status, reason, headers, body, body_cut, body_size, ts, grpc_sizes, host_name

cdef class Exchange(_Record):
    cdef public object conn, role, tls, request, response, extra
