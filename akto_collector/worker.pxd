# Compiled form of worker.py (see docs/ARCHITECTURE.md, "Compiled core"):
# the worker becomes an extension type, so its fields are C struct members
# instead of instance-dict lookups on every pair. Keep the attribute list
# equal to Worker.__slots__ (a unit test checks).

cdef class Worker:
    cdef public object index, settings, counters, stream_budget, sink, encoder, filter, limits
    cdef public object disable_egress, idle, streams, metas, role_hints, meta_seen, by_tgid
    cdef public object close_grace, closing, base_tag, tags, clock_offset

    cpdef handle_batch(self, blob)
    cpdef emit(self, ex)
