# Compiled form of router.py (see docs/ARCHITECTURE.md, "Compiled core"):
# each record's kind is a C byte read, not a Python int.
# Keep the attribute list equal to Router.__slots__ (a unit test checks).

cimport cython

cdef class Router:
    cdef public object batches, control, execs, exits, ring_peak, pending, shed, shed_records, tags, _records

    @cython.locals(raw=bytes, kind=cython.int, at=cython.Py_ssize_t, data=cython.int, exec_=cython.int, exit_=cython.int,
                   n=cython.Py_ssize_t, records=list, batches=list)
    cpdef drain(self, probes)
