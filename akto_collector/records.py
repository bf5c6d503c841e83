"""The wire format of ring buffer records (struct ev_hdr in probes/common.h).

The supervisor routes records without decoding them; workers decode. Keep
this in step with common.h.
"""

import struct

# ts, gen, call_pos, tgid, fd, total, offset, len, kind, flags, dir, role, pad
RECORD = struct.Struct("<QQQIIIIHBBBBH")
HDR_SIZE = RECORD.size
assert HDR_SIZE == 48
LEN_OFFSET = 40
KIND_OFFSET = 42
TGID_FD = slice(24, 32)

KIND_DATA, KIND_OPEN, KIND_ADDR, KIND_CLOSE, KIND_EXEC, KIND_EXIT = 1, 2, 3, 4, 5, 6

# Payload of OPEN and ADDR records: struct addr_info, then the task's comm.
# family, sport (own), dport (peer), pad, saddr (own), daddr (peer), comm
ADDR = struct.Struct("<HHHH16s16s16s")
