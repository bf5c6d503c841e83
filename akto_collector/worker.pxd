# Compiled form of worker.py (see docs/ARCHITECTURE.md, "Compiled core"):
# the worker becomes an extension type, so its fields are C struct members
# instead of instance-dict lookups on every pair. Keep the attribute list
# equal to Worker.__slots__ (a unit test checks).

cimport cython
from akto_collector.protocols.streams cimport ConnectionStream

cdef class Worker:
    cdef public object index, settings, counters, stream_budget, sink, encoder, filter, limits
    cdef public object disable_egress, idle, streams, metas, role_hints, meta_seen, by_tgid
    cdef public object close_grace, closing, base_tag, tags, clock_offset

    @cython.locals(blob=bytes, p=cython.p_uchar, h=cython.p_uchar, off=cython.Py_ssize_t, end=cython.Py_ssize_t,
                   start=cython.Py_ssize_t, ts_ns=cython.ulonglong, gen=cython.ulonglong, call_pos=cython.ulonglong,
                   tgid=cython.uint, fd=cython.uint, total=cython.uint, offset=cython.uint, ln=cython.ushort,
                   kind=cython.int, flags=cython.int, direction=cython.int, role=cython.int, proto=cython.int,
                   ts_at=cython.Py_ssize_t, gen_at=cython.Py_ssize_t, pos_at=cython.Py_ssize_t,
                   tgid_at=cython.Py_ssize_t, fd_at=cython.Py_ssize_t, total_at=cython.Py_ssize_t,
                   offset_at=cython.Py_ssize_t, len_at=cython.Py_ssize_t, kind_at=cython.Py_ssize_t,
                   flags_at=cython.Py_ssize_t, dir_at=cython.Py_ssize_t, role_at=cython.Py_ssize_t,
                   proto_at=cython.Py_ssize_t, cs=ConnectionStream)
    cpdef handle_batch(self, blob)
    cpdef emit(self, ex)
