# Compiled form of http1_syntax.py (see docs/ARCHITECTURE.md, "Compiled core"):
# its per-message functions become cpdef, and http1_reader.pxd cimports them,
# so the reader calls them in C instead of through Python calls (argument
# parsing and a tuple each: a few thousand instructions per head).

cimport cython

cpdef int body_framing(request_method, status, content_length, chunked) except -1
cpdef bint plain_request_line(parts) except -1
cpdef list parse_fields(text)
cpdef content_length(value)
@cython.locals(p=cython.p_uchar, i=Py_ssize_t, c=int)
cpdef tuple head_end(b, Py_ssize_t start, Py_ssize_t n)
cpdef tuple head_end_by_finds(b, Py_ssize_t start, Py_ssize_t n)
