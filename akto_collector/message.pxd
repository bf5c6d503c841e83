# Compiled form of message.py (see docs/ARCHITECTURE.md, "Compiled core").
# Keep the attribute list equal to MessageEncoder.__slots__ (a unit test checks).

cimport cython
from akto_collector.events cimport Exchange, HttpRequest, HttpResponse

cdef class MessageEncoder:
    cdef public object _account_id, _vxlan_id, _daemonset_id, _conns, _redactor

    # The pair's fields are C struct members: read directly, not looked up.
    @cython.locals(exchange=Exchange, req=HttpRequest, resp=HttpResponse)
    cpdef encode(self, exchange, meta)

# Called per pair by encode: C calls instead of Python calls (still callable from Python).
cpdef dict header_map(headers, host_name=*)
cpdef tuple _fields(headers, host_name)
cpdef bytes _rename_host(doc, host)
cpdef str payload_text(body, cut, size)
cpdef str grpc_text(body)
