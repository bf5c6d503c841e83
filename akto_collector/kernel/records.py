"""The wire format of ring buffer records and the kernel's counter slots.

Mirrors of probes/common.h (``struct ev_hdr``, ``struct addr_info``, the
``KIND_*`` and ``C_*`` defines); tests/unit/test_kernel_layout.py parses the
header and fails when the two disagree. The supervisor routes records
without decoding them; workers decode.
"""

import struct

# ts, gen, call_pos, tgid, fd, total, offset, len, kind, flags, dir, role, proto, pad
_FIELDS = "QQQIIIIHBBBBBB"
RECORD = struct.Struct("<" + _FIELDS)
HDR_SIZE = RECORD.size
assert HDR_SIZE == 48
# Each field's byte offset, from the format: the supervisor reads the length
# and kind in place, and so does a compiled worker every field.
(TS_AT, GEN_AT, POS_AT, TGID_AT, FD_AT, TOTAL_AT, OFFSET_AT, LEN_OFFSET, KIND_OFFSET, FLAGS_AT, DIR_AT, ROLE_AT,
 PROTO_AT, _PAD_AT) = (struct.calcsize("<" + _FIELDS[:i]) for i in range(len(_FIELDS)))
TGID_FD = slice(TGID_AT, TOTAL_AT)  # tgid and fd: a connection's shard
TGID = slice(TGID_AT, FD_AT)

KIND_DATA, KIND_OPEN, KIND_ADDR, KIND_CLOSE, KIND_EXEC, KIND_EXIT = 1, 2, 3, 4, 5, 6

# The kernel wakes the reader for a process's first connection at most this
# often, node-wide (socket_trace.c open_exit, as WAKE_GAP_NS); the supervisor
# drains again within it after a wake-up (arbiter.WOKEN_FOLLOW_MS).
WAKE_GAP_MS = 2

# Payload of OPEN and ADDR records: struct addr_info, then the task's comm.
# family, sport (own), dport (peer), pad, saddr (own), daddr (peer), comm
ADDR = struct.Struct("<HHHH16s16s16s")

# Slots of the `counters` per-CPU array (common.h's C_* defines) and the
# names they are reported under. Slots without a name are internal.
KERNEL_COUNTERS = {
    0: "kernel.dropped.ringbuf_full",
    1: "kernel.dropped.conn_table_full",
    2: "kernel.not_http_connections",
    3: "kernel.cut_bytes",
    4: "kernel.dropped.tls_no_fd",
    5: "kernel.skipped.egress",
    8: "kernel.skipped.plaintext_on_tls",
    9: "kernel.untraced_socket_bytes",
    10: "kernel.dropped.copy_preempted",
    11: "kernel.dropped.emit_unreached",
    12: "kernel.go_tls.layout_confirmed",
    13: "kernel.dropped.go_tls_unconfirmed",
    14: "kernel.dropped.go_tls_layout_mismatch",
    15: "kernel.go_tls.default_layout",
    16: "kernel.dropped.shed_connections",
    17: "kernel.dropped.shed_calls",
    18: "kernel.dropped.shed_bytes",
    19: "kernel.dropped.shed_requests",
    20: "kernel.go_tls.data_after_close",
}
