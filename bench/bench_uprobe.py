"""What one probed TLS call costs the traced thread on this machine.

Attaches an empty uprobe, then a uretprobe, to a trivial libcrypto function
and times a tight loop of calls in a child process. The uprobe's int3 trap
and out-of-line single step are the price every SSL_read/SSL_write pays when
TLS capture is on; nothing in the collector can make it cheaper.

    .venv/bin/python bench/bench_uprobe.py
"""

import subprocess
import sys

from bcc import BPF  # a bench may use bcc directly: it measures the kernel, not our code

LIB = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
SYM = "OpenSSL_version_num"
PROGRAM = r"""
BPF_HASH(calls, u32, u64, 1024);
int enter(struct pt_regs *ctx) { u32 k = bpf_get_current_pid_tgid(); u64 v = 1; calls.update(&k, &v); return 0; }
int leave(struct pt_regs *ctx) { u32 k = bpf_get_current_pid_tgid(); calls.delete(&k); return 0; }
"""
LOOP = (f"import ctypes, time; f = ctypes.CDLL({LIB!r}).{SYM}; n = 200000; t = time.perf_counter()\n"
        "for _ in range(n): f()\n"
        "print((time.perf_counter() - t) / n * 1e6)")


def per_call_us() -> float:
    return min(float(subprocess.check_output([sys.executable, "-c", LOOP])) for _ in range(3))


def main() -> None:
    base = per_call_us()
    b = BPF(text=PROGRAM)
    b.attach_uprobe(name=LIB, sym=SYM, fn_name="enter")
    entry = per_call_us()
    b.attach_uretprobe(name=LIB, sym=SYM, fn_name="leave")
    both = per_call_us()
    b.cleanup()
    print(f"plain call (ctypes): {base:.2f} us")
    print(f"+ uprobe:            {entry - base:.2f} us per call")
    print(f"+ uprobe + uretprobe: {both - base:.2f} us per call (what each probed SSL_read/SSL_write costs)")


if __name__ == "__main__":
    main()
