"""The Python mirror of probes/common.h: record layout, kinds, counter slots and names.

The kernel writes records as ``struct ev_hdr`` plus bytes; the router and the
workers read them through ``kernel.records``. A field added or moved on one
side only would garble every record silently, so the header is parsed here
and the two compared.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from akto_collector.kernel import records

HEADER = (Path(__file__).resolve().parents[2] / "probes" / "common.h").read_text()
C_TYPES = {"u64": "Q", "u32": "I", "u16": "H", "u8": "B", "s32": "i", "s64": "q"}


def c_struct(name: str) -> list[tuple[str, str, int]]:
    """(type, field, array length) of each member of ``struct name`` in common.h."""
    body = re.search(r"struct %s \{(.*?)\};" % name, HEADER, re.S)[1]
    out = []
    for line in body.splitlines():
        line = line.split("/*")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\w+) (\w+)(?:\[(\d+)\])?;", line)
        assert m, f"cannot read {line!r} of struct {name}"
        out.append((m[1], m[2], int(m[3] or 1)))
    return out


def fmt_of(members) -> str:
    return "<" + "".join(f"{n if n > 1 else ''}{C_TYPES[t] if n == 1 or t != 'u8' else 's'}" for t, _, n in members)


def defines(prefix: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"#define (%s\w+) (\d+)" % prefix, HEADER)}


def test_record_header_matches_struct_ev_hdr():
    members = c_struct("ev_hdr")
    assert fmt_of(members) == records.RECORD.format
    offsets, off = {}, 0
    for t, field, n in members:
        offsets[field] = off
        off += struct.calcsize(C_TYPES[t]) * n
    assert off == records.HDR_SIZE
    assert offsets["len"] == records.LEN_OFFSET
    assert offsets["kind"] == records.KIND_OFFSET
    assert (offsets["tgid"], offsets["fd"] + 4) == (records.TGID_FD.start, records.TGID_FD.stop)
    assert (offsets["tgid"], offsets["tgid"] + 4) == (records.TGID.start, records.TGID.stop)


def test_addr_payload_matches_struct_addr_info_and_comm():
    members = c_struct("addr_info")
    assert fmt_of(members) + "16s" == records.ADDR.format
    assert re.search(r"struct ev_addr \{ struct ev_hdr h; struct addr_info a; char comm\[16\]; \};", HEADER)


def test_record_kinds_match():
    kinds = {name.removeprefix("KIND_"): value for name, value in defines("KIND_").items()}
    python = {name.removeprefix("KIND_"): getattr(records, name) for name in dir(records)
              if name.startswith("KIND_") and name != "KIND_OFFSET"}
    assert kinds == python


def test_counter_slots_and_names_match():
    named = {int(m[2]): m[3] for m in re.finditer(r"#define (C_\w+) (\d+) +/\* (kernel\.[\w.]+) \*/", HEADER)}
    assert named == records.KERNEL_COUNTERS
    slots = defines("C_")
    assert max(records.KERNEL_COUNTERS) < slots["C_NCOUNTERS"]


def test_flags_roles_and_directions_match_the_events_module():
    from akto_collector import events, protocols

    assert {k: v for k, v in defines("PROTO_").items()} == {
        "PROTO_UNKNOWN": protocols.PROTO_UNKNOWN, "PROTO_HTTP1": protocols.PROTO_HTTP1, "PROTO_HTTP2": protocols.PROTO_HTTP2}
    assert defines("FLAG_") == {"FLAG_TLS": events.FLAG_TLS, "FLAG_CUT": events.FLAG_CUT, "FLAG_SHED": events.FLAG_SHED}
    assert defines("ROLE_") == {"ROLE_UNKNOWN": events.ROLE_UNKNOWN, "ROLE_SERVER": events.ROLE_SERVER,
                                "ROLE_CLIENT": events.ROLE_CLIENT}
    assert defines("DIR_") == {"DIR_SEND": events.SEND, "DIR_RECV": events.RECV}


def test_every_tracepoint_program_is_attached_by_the_loader_once_the_copying_programs_are_in_place():
    from akto_collector.kernel.loader import ProbeOptions, program_text, tracepoints

    text = program_text(ProbeOptions())
    # bcc attaches a TRACEPOINT_PROBE while loading, before the program arrays are filled.
    assert "TRACEPOINT_PROBE(" not in text.replace("TRACEPOINT_PROBE:", "")
    sock, syscall = tracepoints(text, sock_data=True), tracepoints(text, sock_data=False)
    for found in (sock, syscall):
        names = {tp for tp, _ in found}
        assert len(names) == len(found)  # each once
        assert {"syscalls:sys_enter_accept4", "syscalls:sys_enter_close", "syscalls:sys_exit_sendfile64",
                "sched:sched_process_exec", "sock:inet_sock_set_state"} <= names
        assert all(fn == "tp__" + tp.replace(":", "__") for tp, fn in found)
    # The two data paths: a read or write on a file costs nothing on the first.
    only_sock = {tp for tp, _ in sock} - {tp for tp, _ in syscall}
    only_syscall = {tp for tp, _ in syscall} - {tp for tp, _ in sock}
    assert only_sock == {"sock:sock_recv_length", "sock:sock_send_length"}
    assert {"syscalls:sys_enter_read", "syscalls:sys_exit_write", "syscalls:sys_exit_recvmsg"} <= only_syscall
    assert all(f"SOCK_DATA({tp.replace(':', ', ')})" in text for tp in only_sock)
    assert all(f"SYSCALL_DATA({tp.replace(':', ', ')})" in text for tp in only_syscall)
