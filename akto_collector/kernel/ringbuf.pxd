# Compiled form of ringbuf.py (see docs/ARCHITECTURE.md, "Compiled core"):
# positions and headers are read through typed memoryviews, C loads, and the
# drain's arithmetic is on C integers (untyped, it was 4,000 instructions a
# record). Keep the attribute list equal to RingReader.__slots__ (a unit test checks).

cimport cython

# The record header's bits and the publishing period, as C constants.
cdef unsigned int _BUSY, _DISCARD, _LEN_MASK
cdef long _PUBLISH_EVERY

cdef class RingReader:
    cdef public object size, _mask, _page, _head, _used_at, _consumer, _data, _epoll
    cdef unsigned long long[:] _cons
    cdef const unsigned long long[:] _prod
    cdef const unsigned int[:] _u32
    cdef const unsigned short[:] _u16

    cpdef pending_bytes(self)
    @cython.locals(cons=cython.ulonglong, prod=cython.ulonglong, mask=cython.ulonglong, off=cython.ulonglong,
                   base=cython.ulonglong, head_size=cython.uint, used_at=cython.ulonglong, word=cython.uint,
                   length=cython.uint, used=cython.uint, start=cython.ulonglong, n=cython.long)
    cpdef drain(self, list out)
