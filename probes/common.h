/* Shared by socket_trace.c and tls_trace.c.
 *
 * Strategy: no kernel struct is read (the headers bcc compiles against are
 * not the running kernel's). Everything comes from syscall arguments, user
 * memory, tracepoint fields (whose layout bcc reads from tracefs), and the
 * task's saved user registers.
 *
 * Defines set by akto_collector/kernel/loader.py: MAX_CONN, CAPTURE_PLAIN,
 * CAPTURE_TLS, DISABLE_EGRESS, FILTER_TLS_PIDS, RINGBUF_PAGES, COLLECTOR_TGID,
 * COPY_LIMIT, WAKE_GAP_NS, GO_DEFAULT_* (tlslibs.GO_DEFAULT_FD_LAYOUT).
 */
#include <uapi/linux/ptrace.h>
#include <asm/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/uio.h>

/* A tracepoint program. Not bcc's TRACEPOINT_PROBE: bcc attaches those while
 * it loads, before the loader has put the copying programs in their program
 * arrays (a call traced meanwhile would be lost). The loader attaches every
 * TRACEPOINT(...) it finds in the source once they are in place, and may
 * leave out the ones this kernel lacks. */
#define TRACEPOINT(category, event) int tp__##category##__##event(struct tracepoint__##category##__##event *args)
/* The same, attached only on one of the two data paths (socket_trace.c). */
#define SOCK_DATA(category, event) TRACEPOINT(category, event)
#define SYSCALL_DATA(category, event) TRACEPOINT(category, event)

#define KIND_DATA 1
#define KIND_OPEN 2
#define KIND_ADDR 3
#define KIND_CLOSE 4
#define KIND_EXEC 5
#define KIND_EXIT 6

#define DIR_SEND 0
#define DIR_RECV 1

#define FLAG_TLS 1
#define FLAG_CUT 2
#define FLAG_SHED 4 /* a call of an HTTP/2 connection shed: the gaps in it are DATA payloads left out */

#define ROLE_UNKNOWN 0
#define ROLE_SERVER 1
#define ROLE_CLIENT 2

#define ST_UNKNOWN 0
#define ST_HTTP 1

/* Protocol of a connection (akto_collector/protocols PROTO_*), stamped on
 * every record so that user space picks the parser. */
#define PROTO_UNKNOWN 0
#define PROTO_HTTP1 1
#define PROTO_HTTP2 2

/* A connection whose accept/connect we did not see (it predates us) may be
 * joined mid-body: give it this many calls to show a message start before
 * judging it not HTTP. */
#define PROBATION_CALLS 64

/* Copy caps. Each piece goes into a ring buffer slot of one of six fixed
 * sizes, 512 B to 32 KiB (the verifier needs a constant reserve size); only
 * the header and the filled bytes are read by user space. */
#define CHUNK_S 512
#define CHUNK_1K 1024
#define CHUNK_2K 2048
#define CHUNK_M 4096
#define CHUNK_8K 8192
#define CHUNK_L 32768
/* A call is copied up to COPY_LIMIT bytes (AKTO_MAX_BODY_BYTES and room for
 * the head, set by the loader), in pieces of at most CHUNK_L: a piece per
 * CHUNK_L of an iovec, walked by one bounded loop (never unrolled: the
 * verifier checks each iteration, and the program stays small). The loop
 * stops after MAX_PIECES pieces (the verifier walks every iteration, and each
 * costs it six paths) and the copying program tail-calls itself to go on,
 * its position kept in the job: the kernel allows 33 tail calls in a chain,
 * so a call's copy ends at COPY_LIMIT or after 33 * MAX_PIECES pieces (8.4 MiB
 * of one buffer, fewer when a call has many small iovecs). Beyond either, the
 * rest is flagged cut, with its size, and counted (kernel.cut_bytes). */
#define MAX_PIECES 8
#define MAX_IOV 1024 /* UIO_MAXIOV */
/* An HTTP/2 call while shedding (h2_walk): frame headers read per run of the
 * copying program, DATA payloads that may be left out per call (a power of two). */
#define H2_WALK 16 /* per run */
#define H2_SKIPS 32

/* Counter slots (array map `counters`); the comment is the name user space
 * reports it under (kernel/records.py KERNEL_COUNTERS, checked by a test).
 * Slots without a name are internal. */
#define C_RB_FULL 0        /* kernel.dropped.ringbuf_full */
#define C_CONN_FULL 1      /* kernel.dropped.conn_table_full */
#define C_NOT_HTTP 2       /* kernel.not_http_connections */
#define C_CUT_BYTES 3      /* kernel.cut_bytes */
#define C_TLS_NO_FD 4      /* kernel.dropped.tls_no_fd */
#define C_EGRESS_SKIPPED 5 /* kernel.skipped.egress */
#define C_EVENTS 6
#define C_BYTES 7
#define C_PLAIN_ON_TLS 8   /* kernel.skipped.plaintext_on_tls */
#define C_UNTRACED_BYTES 9 /* kernel.untraced_socket_bytes */
#define C_COPY_PREEMPTED 10 /* kernel.dropped.copy_preempted */
#define C_EMIT_UNREACHED 11 /* kernel.dropped.emit_unreached */
#define C_GO_CONFIRMED 12 /* kernel.go_tls.layout_confirmed */
#define C_GO_UNCONFIRMED 13 /* kernel.dropped.go_tls_unconfirmed */
#define C_GO_MISMATCH 14 /* kernel.dropped.go_tls_layout_mismatch */
#define C_GO_DEFAULT_LAYOUT 15 /* kernel.go_tls.default_layout */
#define C_SHED_CONNS 16 /* kernel.dropped.shed_connections */
#define C_SHED_CALLS 17 /* kernel.dropped.shed_calls */
#define C_SHED_BYTES 18 /* kernel.dropped.shed_bytes */
#define C_SHED_REQUESTS 19 /* kernel.dropped.shed_requests */
#define C_GO_AFTER_CLOSE 20 /* kernel.go_tls.data_after_close */
#define C_NCOUNTERS 32 /* slots; the array has this many */

/* The header of every ring buffer record (kernel/records.py RECORD mirrors
 * it; a test checks the two). */
struct ev_hdr {
    u64 ts;
    u64 gen;
    u64 call_pos;
    u32 tgid;
    u32 fd;
    u32 total;
    u32 offset;
    u16 len;
    u8 kind;
    u8 flags;
    u8 dir;
    u8 role;
    u8 proto;
    u8 pad;
};

struct ev_s { struct ev_hdr h; char buf[CHUNK_S]; };
struct ev_1k { struct ev_hdr h; char buf[CHUNK_1K]; };
struct ev_2k { struct ev_hdr h; char buf[CHUNK_2K]; };
struct ev_m { struct ev_hdr h; char buf[CHUNK_M]; };
struct ev_8k { struct ev_hdr h; char buf[CHUNK_8K]; };
struct ev_l { struct ev_hdr h; char buf[CHUNK_L]; };

struct addr_info {
    u16 family;
    u16 sport; /* host order, this socket's own port */
    u16 dport;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
};
struct ev_addr { struct ev_hdr h; struct addr_info a; char comm[16]; };

struct conn_t {
    u64 gen;
    u64 pos[4]; /* [tls * 2 + dir]: bytes seen so far, the stream position */
    u64 last_ts;
    u64 sk;
    u16 probation;
    u8 state;
    u8 role;
    u8 tls;
    u8 opened;
    u8 addr_sent;
    u8 proto;
    u8 shed; /* began while shedding: tracked, not copied (admit) */
    /* HTTP/2 while shedding (h2_walk), per direction: where the next call
     * must begin (stream position) for h2_rem to hold, the bytes of a frame
     * that go on into that call, whether they are a DATA payload left out. */
    u8 h2_known[2];
    u8 h2_skip[2];
    u32 h2_rem[2];
    u64 h2_next[2];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(conns, u64, struct conn_t, MAX_CONN);
/* (tgid,fd) judged not HTTP; its identity is kept so that TLS plaintext
 * found later on the same socket continues the same connection. */
struct skip_t {
    u64 gen;
    u64 sk;
    u8 role;
    u8 opened;
    u8 tls; /* judged on TLS plaintext: final; on ciphertext: TLS may still revive it */
};
BPF_TABLE("lru_hash", u64, struct skip_t, skipped, 65536);
BPF_TABLE("lru_hash", u64, struct addr_info, sk_addr, 65536); /* sock ptr -> 4-tuple */
BPF_HASH(ignore_tgid, u32, u8, 4096);                 /* the collector's own processes */
BPF_PERCPU_ARRAY(counters, u64, C_NCOUNTERS);
BPF_TABLE("lru_hash", u32, u8, tls_pids, 65536);     /* with FILTER_TLS_PIDS: who may be traced */

/* Per thread: the TLS call in progress, so the syscall beneath it can name
 * its fd and keep its ciphertext out. Defined here because socket_trace.c
 * consults it even when TLS capture is off. */
struct tls_call_t {
    u64 ssl;
    u64 buf;
    u64 lenptr;
    u64 sk; /* the socket of the syscall beneath, when there was one */
    u64 start; /* when the call began (bpf_ktime_get_ns) */
    s32 fd;
    u8 dir;
    u8 pad[3];
};
BPF_TABLE("lru_hash", u32, struct tls_call_t, tls_calls, 16384);
/* Per thread: the socket it read last (node runs OpenSSL over memory BIOs,
 * so no syscall happens under SSL_read; the ciphertext it decrypts was just
 * read from this fd by the same event-loop thread), and whether it is inside
 * a TLS library call or a Go crypto/tls call (tls_calls, go_threads hold
 * those). Read on every socket call of every process, so it must be cheap:
 * an lru_hash update cost 250 to 450 ns per read here, and the two lookups
 * of tls_calls and go_threads that every socket call made (nearly always
 * finding nothing) about 100 ns more. So a slot per thread id's low bits
 * holds (tid << 32 | flags | fd), written and read by one aligned 8-byte
 * access (never torn). A slot two threads share answers only for the thread
 * that wrote it last: the other finds another tid there, which means
 * "unknown", and looks in the two maps as before. A flag is set when the
 * call's map entry is made and cleared when it is deleted, so a slot of a
 * thread's own with no flag is certain: no entry. A thread's exit clears its
 * slot, so a reused thread id never inherits an fd. fds are below 2^30
 * (fs.nr_open's maximum), which leaves two bits. */
#define LAST_READ_SLOTS 65536
#define SLOT_IN_TLS (1u << 31)
#define SLOT_IN_GO (1u << 30)
#define SLOT_IN_CALL (SLOT_IN_TLS | SLOT_IN_GO)
#define SLOT_FD (SLOT_IN_GO - 1)
#define SLOT_NO_FD SLOT_FD
BPF_ARRAY(last_read_fd, u64, LAST_READ_SLOTS);

static __always_inline u64 *thread_slot(u32 tid) {
    u32 slot = tid & (LAST_READ_SLOTS - 1);
    return last_read_fd.lookup(&slot);
}

/* The low word of thread tid's slot (flags | fd); unknown (every flag, no
 * fd) when another thread wrote the slot last. */
static __always_inline u32 slot_word(u64 *v, u32 tid) {
    u64 x = v ? *v : 0;
    return (u32)(x >> 32) == tid ? (u32)x : (SLOT_IN_CALL | SLOT_NO_FD);
}

/* The thread has entered (on) or left a TLS or Go TLS call (its map entry
 * was just made or deleted). */
static __always_inline void thread_flag(u32 tid, u32 flag, int on) {
    u64 *v = thread_slot(tid);
    if (!v)
        return;
    u64 x = *v;
    if ((u32)(x >> 32) != tid) {
        if (!on)
            return; /* not ours: nothing of ours to clear */
        x = SLOT_NO_FD;
    }
    u32 w = on ? ((u32)x | flag) : ((u32)x & ~flag);
    *v = ((u64)tid << 32) | w;
}

/* The socket thread tid read last, or -1. */
static __always_inline s32 last_read_get(u32 tid) {
    u32 fd = slot_word(thread_slot(tid), tid) & SLOT_FD;
    return fd == SLOT_NO_FD ? -1 : (s32)fd;
}

static __always_inline void last_read_forget(u32 tid) {
    u64 *v = thread_slot(tid);
    if (v && (u32)(*v >> 32) == tid)
        *v = 0;
}
/* Per thread: the Go crypto/tls call in progress (its goroutine), so that a
 * socket syscall beneath names the fd that confirms the conn's layout
 * (go_tls.c). Defined here because socket_trace.c fills it. */
struct go_thread_t {
    u64 g;
    s32 fd;
    u32 tgid;
};
BPF_TABLE("lru_hash", u32, struct go_thread_t, go_threads, 16384);
/* Per Go process: how to read the fd from a *tls.Conn (written by user
 * space), and the net.Conn types confirmed to lead to it (go_tls.c). */
#define GO_ITABS 4
struct go_proc_t {
    u32 conn;       /* tls.Conn.conn */
    u32 iface_data; /* the data pointer in an interface value */
    u32 tcpconn_fd; /* net.TCPConn -> conn.fd (*netFD) */
    u32 netfd_pfd;  /* netFD.pfd (poll.FD) */
    u32 pfd_sysfd;  /* poll.FD.Sysfd */
    u32 pad;
    u64 itab[GO_ITABS];
};
BPF_HASH(go_procs, u32, struct go_proc_t, 4096);

/* Shedding: while set, an HTTP/1 connection is shed from its first bytes, or
 * from the next call that starts a request: tracked, not copied, what it moves
 * counted (requests, calls, bytes), until a call on it starts a request once
 * shedding has stopped. So what is copied is whole exchanges. An HTTP/2
 * connection is never shed: its DATA payloads are left out (h2_walk), its
 * header blocks kept. Set by user space (supervisor/shedding.py:
 * the ring's fill, its own backlog, CPU throttling) and here when the ring
 * refuses a record; cleared by user space. Mapped into the supervisor's
 * memory (BPF_F_MMAPABLE), which reads it after every drain: a lookup
 * through bcc took a fifth of the idle supervisor's CPU. */
BPF_F_TABLE("array", int, u32, shed_state, 1, BPF_F_MMAPABLE);

static __always_inline int shedding(void) {
    u32 k = 0;
    u32 *v = shed_state.lookup(&k);
    return v && *v;
}

static __always_inline void count(u32 slot, u64 n) {
    u64 *c = counters.lookup(&slot);
    if (c)
        *c += n;
}

/* The ring refused a record: counted, and shedding starts at once (user
 * space ends it once the ring has room again). */
static __always_inline void ring_full(void) {
    count(C_RB_FULL, 1);
    u32 k = 0, one = 1;
    shed_state.update(&k, &one);
}

static __always_inline u64 conn_key(u32 tgid, u32 fd) {
    return ((u64)tgid << 32) | fd;
}

/* The collector's own processes are never traced. The supervisor is known
 * at compile time: bcc attaches each program as soon as it is verified, so a
 * map filled after loading would leave the supervisor traced for the time the
 * other programs take to verify (its /readyz was captured then). */
static __always_inline int ignored(u32 tgid) {
    if (tgid == COLLECTOR_TGID)
        return 1;
    return ignore_tgid.lookup(&tgid) != 0;
}

static __always_inline struct conn_t *conn_create(u64 key, u64 gen, u8 opened, u8 role) {
    struct conn_t n = {};
    n.gen = gen;
    n.last_ts = bpf_ktime_get_ns();
    n.opened = opened;
    n.role = role;
    if (conns.insert(&key, &n) != 0) {
        count(C_CONN_FULL, 1);
        return 0;
    }
    return conns.lookup(&key);
}

/* Look the connection up, creating it when new. NULL when it is judged not
 * HTTP, or when the table is full (counted: the cap is TRAFFIC_MAX_ACTIVE_CONN). */
static __always_inline struct conn_t *conn_get(u64 key, int create, u8 opened, u8 role) {
    struct conn_t *c = conns.lookup(&key);
    if (c)
        return c;
    if (!create)
        return 0;
    if (skipped.lookup(&key))
        return 0;
    return conn_create(key, bpf_ktime_get_ns(), opened, role);
}

/* For TLS plaintext: the socket's ciphertext may have been judged not HTTP;
 * the plaintext decides, on the same connection identity. */
static __always_inline struct conn_t *conn_get_tls(u64 key) {
    struct conn_t *c = conns.lookup(&key);
    if (c)
        return c;
    struct skip_t *sp = skipped.lookup(&key);
    if (!sp)
        return conn_create(key, bpf_ktime_get_ns(), 0, ROLE_UNKNOWN);
    if (sp->tls)
        return 0; /* its plaintext was already judged not HTTP */
    struct skip_t s = *sp;
    skipped.delete(&key);
    c = conn_create(key, s.gen, s.opened, s.role);
    if (c)
        c->sk = s.sk;
    return c;
}

static __always_inline void judge_not_http(u64 key, struct conn_t *c) {
    struct skip_t s = {};
    s.gen = c->gen;
    s.role = c->role;
    s.opened = c->opened;
    s.sk = c->sk;
    s.tls = c->tls;
    conns.delete(&key);
    skipped.update(&key, &s);
    count(C_NOT_HTTP, 1);
}

static __always_inline int is_upper(char c) { return c >= 'A' && c <= 'Z'; }

/* Whether 9 bytes are a plausible HTTP/2 frame header: a known type whose
 * flags, length and stream id fit it. Returns the frame's length, or -1. */
static __always_inline long h2_frame(const u8 *h) {
    u32 len = ((u32)h[0] << 16) | ((u32)h[1] << 8) | h[2];
    u8 type = h[3], flags = h[4];
    u32 sid = ((u32)(h[5] & 0x7f) << 24) | ((u32)h[6] << 16) | ((u32)h[7] << 8) | h[8];
    if (h[5] & 0x80 || len > (1 << 20))
        return -1;
    switch (type) {
    case 0: /* DATA: END_STREAM, PADDED */
        return sid && !(flags & ~0x09) ? len : -1;
    case 1: /* HEADERS: END_STREAM, END_HEADERS, PADDED, PRIORITY */
        return sid && !(flags & ~0x2d) ? len : -1;
    case 2: /* PRIORITY */
        return sid && len == 5 && !flags ? len : -1;
    case 3: /* RST_STREAM */
        return sid && len == 4 && !flags ? len : -1;
    case 4: /* SETTINGS: ACK */
        return !sid && !(flags & ~1) && len % 6 == 0 && !(flags && len) ? len : -1;
    case 5: /* PUSH_PROMISE: END_HEADERS, PADDED */
        return sid && !(flags & ~0x0c) && len >= 4 ? len : -1;
    case 6: /* PING: ACK */
        return !sid && len == 8 && !(flags & ~1) ? len : -1;
    case 7: /* GOAWAY */
        return !sid && len >= 8 && !flags ? len : -1;
    case 8: /* WINDOW_UPDATE */
        return len == 4 && !flags ? len : -1;
    case 9: /* CONTINUATION: END_HEADERS */
        return sid && !(flags & ~0x04) ? len : -1;
    }
    return -1;
}

/* A call that begins with two plausible HTTP/2 frames, back to back: an HTTP/2
 * connection joined mid-way. 1 yes, 0 inconclusive (one frame, the call ends
 * with it), -1 no. */
static __always_inline int h2_frames(const char *ubuf, u32 len) {
    u8 h[9] = {};
    if (len < 9 || bpf_probe_read_user(h, 9, ubuf) != 0)
        return -1;
    long n = h2_frame(h);
    if (n < 0)
        return -1;
    u64 next = 9 + (u64)n;
    if (next + 9 > len)
        return next == len ? 0 : -1;
    if (bpf_probe_read_user(h, 9, ubuf + next) != 0)
        return -1;
    return h2_frame(h) < 0 ? -1 : 1;
}

#define K_REQUEST 1
#define K_RESPONSE 2
#define K_H2_PREFACE 3
#define K_H2_FRAMES 4

/* What the first bytes of a call say: K_REQUEST (a request line),
 * K_RESPONSE (a status line), K_H2_PREFACE, K_H2_FRAMES (see h2_frames), 0
 * inconclusive (too short), -1 not HTTP. Lenient on the method (any
 * upper-case token), as servers are. */
static __always_inline int classify(const char *ubuf, u32 len) {
    char b[16] = {};
    if (len < 4)
        return 0;
    u32 n = len < 16 ? len : 16;
    if (bpf_probe_read_user(b, n & 15 ? n & 15 : 16, ubuf) != 0)
        return -1;
    /* The HTTP/2 client preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": the
     * first 14 bytes decide (a call may hold only part of it). */
    if (b[0] == 'P' && b[1] == 'R' && b[2] == 'I' && b[3] == ' ') {
        if (n < 14)
            return 0;
        if (b[4] == '*' && b[5] == ' ' && b[6] == 'H' && b[7] == 'T' && b[8] == 'T' && b[9] == 'P' &&
            b[10] == '/' && b[11] == '2' && b[12] == '.' && b[13] == '0')
            return K_H2_PREFACE;
    }
    /* A PROXY protocol v2 header (load balancers) precedes the request. */
    if (b[0] == '\r' && b[1] == '\n' && b[2] == '\r' && b[3] == '\n')
        return 0;
    if (b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P') {
        if (n < 5 || b[4] == '/')
            return K_RESPONSE;
    }
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (i >= n)
            return 0;
        if (b[i] == ' ') {
            if (i >= 3)
                return K_REQUEST;
            break;
        }
        if (!is_upper(b[i]) && b[i] != '-' && b[i] != '_')
            break;
    }
    int f = h2_frames(ubuf, len);
    return f > 0 ? K_H2_FRAMES : f;
}

/* Decide, from a call's first bytes, whether to pass it on. Sets the role
 * from what the bytes say. 1: emit, 0: drop. */
/* A call of a shed connection: counted (in requests when it starts one). */
static __always_inline int shed_call(int k, u64 total) {
    count(C_SHED_CALLS, 1);
    count(C_SHED_BYTES, total);
    if (k == K_REQUEST)
        count(C_SHED_REQUESTS, 1);
    return 0;
}

/* Whether to copy this call (first buffer ubuf/len of total bytes). */
static __always_inline int admit(u64 key, struct conn_t *c, u8 dir, const char *ubuf, u32 len, u64 total) {
    int k = 0, fresh = 0;
    if (c->state != ST_HTTP) {
        k = classify(ubuf, len);
        if (k > 0) {
            c->state = ST_HTTP;
            c->proto = k >= K_H2_PREFACE ? PROTO_HTTP2 : PROTO_HTTP1;
            fresh = 1;
            /* A request or the preface read: the process serves; written: it calls.
             * Frames joined mid-way do not say: user space decides. */
            if (c->role == ROLE_UNKNOWN && k != K_H2_FRAMES) {
                if (k == K_REQUEST || k == K_H2_PREFACE)
                    c->role = dir == DIR_RECV ? ROLE_SERVER : ROLE_CLIENT;
                else
                    c->role = dir == DIR_RECV ? ROLE_CLIENT : ROLE_SERVER;
            }
        } else if (k < 0) {
            if (c->opened || c->probation >= PROBATION_CALLS) {
                judge_not_http(key, c);
                return 0;
            }
            c->probation++;
        }
    }
#if DISABLE_EGRESS
    if (c->role == ROLE_CLIENT) {
        count(C_EGRESS_SKIPPED, 1);
        return 0;
    }
#endif
    if (fresh || (c->proto == PROTO_HTTP1 && !c->shed && shedding())) {
        /* A connection's first HTTP/1 bytes, or, on one being copied, a call
         * that starts a request: shed from here, so that what is copied is
         * whole exchanges and what is not is counted in requests. */
        if (!fresh)
            k = classify(ubuf, len);
        if (c->proto == PROTO_HTTP1 && (fresh ? shedding() : k == K_REQUEST)) {
            c->shed = 1;
            count(C_SHED_CONNS, 1);
            return shed_call(k, total);
        }
    } else if (c->shed) {
        /* Resumes at the start of a request: user space meets a new stream
         * there (it never saw the shed bytes). */
        k = classify(ubuf, len);
        if (shedding() || k != K_REQUEST)
            return shed_call(k, total);
        c->shed = 0;
    }
    return 1;
}

/* One piece: header h (offset, flags set by the caller), n bytes at src.
 * The six size classes are spelled out because bcc rewrites map calls
 * only outside macros. Returns 0, or -1 when the ring buffer is full: no
 * other value, so that the six paths join in one verifier state (emit_call
 * loops over pieces; differing states would multiply per iteration). */
#define FILL_PIECE(SIZE)                                                     \
    __builtin_memcpy(&e->h, h, sizeof(*h));                                  \
    u32 m = n >= SIZE ? SIZE : n;                                            \
    long err = 0;                                                            \
    if (n >= SIZE)                                                           \
        err = bpf_probe_read_user(e->buf, SIZE, src);                        \
    else if (n) {                                                            \
        /* the barrier keeps clang from dropping the mask the verifier needs */ \
        u64 sz = n;                                                          \
        asm volatile("%[v] &= %[mask]" : [v] "+r"(sz) : [mask] "i"(SIZE - 1)); \
        err = bpf_probe_read_user(e->buf, sz, src);                          \
    }                                                                        \
    if (err)                                                                 \
        m = 0;                                                               \
    e->h.len = m;

static __always_inline int emit_piece(struct ev_hdr *h, const char *src, u32 n) {
    if (n <= CHUNK_S) {
        struct ev_s *e = events.ringbuf_reserve(sizeof(struct ev_s));
        if (!e) {
            ring_full();
            return -1;
        }
        FILL_PIECE(CHUNK_S)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    if (n <= CHUNK_1K) {
        struct ev_1k *e = events.ringbuf_reserve(sizeof(struct ev_1k));
        if (!e) {
            ring_full();
            return -1;
        }
        FILL_PIECE(CHUNK_1K)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    if (n <= CHUNK_2K) {
        struct ev_2k *e = events.ringbuf_reserve(sizeof(struct ev_2k));
        if (!e) {
            ring_full();
            return -1;
        }
        FILL_PIECE(CHUNK_2K)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    if (n <= CHUNK_M) {
        struct ev_m *e = events.ringbuf_reserve(sizeof(struct ev_m));
        if (!e) {
            ring_full();
            return -1;
        }
        FILL_PIECE(CHUNK_M)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    if (n <= CHUNK_8K) {
        struct ev_8k *e = events.ringbuf_reserve(sizeof(struct ev_8k));
        if (!e) {
            ring_full();
            return -1;
        }
        FILL_PIECE(CHUNK_8K)
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        return 0;
    }
    struct ev_l *e = events.ringbuf_reserve(sizeof(struct ev_l));
    if (!e) {
        ring_full();
        return -1;
    }
    FILL_PIECE(CHUNK_L)
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

/* Emit the marker that says: bytes [offset, total) of this call are missing. */
static __always_inline void emit_cut(struct ev_hdr *h, u32 offset) {
    h->offset = offset;
    h->flags |= FLAG_CUT;
    emit_piece(h, 0, 0);
    count(C_CUT_BYTES, h->total - offset);
}

/* A call's bytes are copied by a program of their own, reached by a tail
 * call (but for a socket call with one buffer that fits one piece, which
 * socket_trace.c sends itself: one emit_piece, no loop): the verifier then checks its loop once, from one state (its inputs
 * come from a map: nothing it knows), instead of once per state the caller
 * arrives with (the classification of the first bytes leaves dozens, and the
 * loop's cost multiplied by them passed the verifier's limit). The caller
 * leaves what to copy in `emit_job` (per CPU) and tail-calls; the job's
 * position in the call stays in the map while the loop runs, so that every
 * path through an iteration ends in the same state. `owner` catches another
 * program run on this CPU meanwhile (a preempted one): the copy then stops,
 * and the bytes not copied show as a gap in the stream, counted. */
struct emit_job_t {
    u64 owner; /* pid_tgid of the call */
    struct ev_hdr h;
    u64 buf;   /* the buffer, or the current iovec's base */
    u64 vec;   /* the iovec array, or 0 */
    u64 vlen;
    u64 vi;    /* the current iovec */
    u32 total; /* bytes the call transferred */
    u32 done;  /* bytes copied */
    u32 at;    /* offset in the current iovec */
    u32 seg;   /* bytes of the current iovec that belong to the call */
    u32 full;  /* the ring buffer refused a piece: stop */
    u32 runs;  /* runs of the copying program so far (the chain allows 33) */
    u32 walk;  /* an HTTP/2 call while shedding: h2_walk first (1), walking (2) */
    u32 wp;    /* h2_walk: where the next frame header is */
    u32 wknown; /* h2_walk: at a frame boundary known */
    u32 wskip; /* h2_walk: the last frame is a DATA payload left out */
    u32 limit; /* copy up to here; the rest was left out (h2_walk) */
    u32 nskip; /* DATA payloads left out inside [0, limit) */
    u32 si;    /* the next of them */
    u32 skip_from[H2_SKIPS];
    u32 skip_to[H2_SKIPS];
};
BPF_PERCPU_ARRAY(emit_job, struct emit_job_t, 1);
/* The copying programs, one per program type (a program array holds one
 * type): for the syscall probes and for the TLS uprobes. Filled by the loader. */
#define EMIT_TRACEPOINT 0
#define EMIT_UPROBE 1
BPF_PROG_ARRAY(emit_tracepoints, 1);
BPF_PROG_ARRAY(emit_uprobes, 1);

/* Emit the `total` bytes a call transferred, from one user buffer (`buf`,
 * vec NULL) or from its iovecs (`vec`, `vlen` of them), by the copying
 * program `which`: does not return when the tail call is made. */
static __always_inline void emit_call(void *ctx, int which, struct ev_hdr *h, const char *buf, const struct iovec *vec,
                                      u64 vlen, u32 total) {
    u32 zero = 0;
    struct emit_job_t *j = emit_job.lookup(&zero);
    if (!j)
        return;
    j->owner = bpf_get_current_pid_tgid();
    __builtin_memcpy(&j->h, h, sizeof(*h));
    j->buf = (u64)buf;
    j->vec = (u64)vec;
    j->vlen = vlen;
    /* with iovecs, the loop starts by moving to the "next" one, the first */
    j->vi = (u64)-1;
    j->total = total;
    j->done = 0;
    j->at = 0;
    j->seg = vec ? 0 : total;
    j->full = 0;
    j->runs = 0;
    j->walk = h->proto == PROTO_HTTP2 && !vec && shedding();
    j->limit = total;
    j->nskip = 0;
    j->si = 0;
    if (which == EMIT_TRACEPOINT)
        emit_tracepoints.call(ctx, 0);
    else
        emit_uprobes.call(ctx, 0);
    count(C_EMIT_UNREACHED, 1); /* the copying program is not there (yet): nothing copied */
}

/* A call with a few iovecs whose bytes fit GATHER_MAX goes out as one record:
 * its iovecs are gathered in a per-CPU buffer, sent by bpf_ringbuf_output
 * (which takes a variable size), instead of a record per iovec. nginx writes
 * every response as one writev of its head and its body: one record instead
 * of two is one reservation less here, and one record less to decode and
 * feed in user space, for every such response. The buffer is twice
 * GATHER_MAX so that an offset and a length each masked below GATHER_MAX
 * stay inside it, which is what the verifier can check. A program that can
 * be preempted (uprobes run so) must not share a per-CPU buffer with another
 * run on the same CPU meanwhile: `busy` is taken by compare-and-swap, and a
 * run that finds it taken copies piece by piece (into records of its own). */
#define GATHER_MAX (CHUNK_8K - 1)
#define GATHER_IOV 8
struct gather_t { u64 busy; struct ev_hdr h; char buf[2 * CHUNK_8K]; };
BPF_PERCPU_ARRAY(gather_buf, struct gather_t, 1);

static __always_inline int gather_into(struct emit_job_t *j, struct gather_t *g) {
    const struct iovec *vec = (const struct iovec *)j->vec;
    u32 total = j->total, off = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < GATHER_IOV; i++) {
        if (off >= total)
            break;
        struct iovec iv = {};
        if (i >= j->vlen || bpf_probe_read_user(&iv, sizeof(iv), &vec[i]) != 0)
            return 0;
        u64 n = iv.iov_len < total - off ? iv.iov_len : total - off;
        u64 o = off;
        /* no-ops (both are below GATHER_MAX) that the verifier needs to see */
        asm volatile("%[v] &= %[mask]" : [v] "+r"(o) : [mask] "i"(CHUNK_8K - 1));
        asm volatile("%[v] &= %[mask]" : [v] "+r"(n) : [mask] "i"(CHUNK_8K - 1));
        if (n && bpf_probe_read_user(g->buf + o, n, iv.iov_base) != 0)
            return 0;
        off += n;
    }
    if (off < total)
        return 0;
    __builtin_memcpy(&g->h, &j->h, sizeof(g->h));
    g->h.offset = 0;
    g->h.flags &= ~FLAG_CUT;
    g->h.len = total;
    u64 size = total;
    asm volatile("%[v] &= %[mask]" : [v] "+r"(size) : [mask] "i"(CHUNK_8K - 1));
    if (events.ringbuf_output(&g->h, sizeof(struct ev_hdr) + size, BPF_RB_NO_WAKEUP) != 0) {
        ring_full();
        j->full = 1;
    } else {
        j->done = total;
    }
    return 1;
}

/* 1: the call was sent whole as one record, or the ring refused it (j->full
 * set); 0: not gathered (more iovecs than GATHER_IOV, an unreadable one),
 * to be copied piece by piece. */
static __always_inline int gather_call(struct emit_job_t *j) {
    u32 zero = 0;
    struct gather_t *g = gather_buf.lookup(&zero);
    if (!g || __sync_val_compare_and_swap(&g->busy, 0, 1) != 0)
        return 0;
    int sent = gather_into(j, g);
    g->busy = 0;
    return sent;
}

/* HTTP/2 is never shed by connection: its header blocks feed an HPACK table
 * that lives as long as the connection (hours, for a gRPC channel), and one
 * block missed leaves it unknown. While shedding, a call of an HTTP/2
 * connection with one buffer (TLS library calls; read, write, send, recv)
 * keeps every byte but its DATA payloads: the frames are walked,
 * each DATA payload becomes a skip (H2_SKIPS of them), a payload running to
 * the call's end the limit, and the frame that goes on into the next call is
 * remembered per direction. User space sees each skip as a gap inside a DATA
 * frame of known length: the body is marked cut, the framing and the table
 * stay whole. The walk starts at a connection's first call (after the
 * client preface) or at any call that begins with a plausible frame header.
 * Where the frames cannot be followed (a first call that does not begin
 * with the preface or a plausible frame header, a header split by the call's end,
 * the tail-call chain's end) the rest of the call is copied and the next
 * call starts afresh; a call with iovecs (sendmsg, writev: grpc-core's
 * cleartext, nginx's writes) is copied whole. Counted as shed calls and bytes.
 *
 * The walk reads H2_WALK frame headers per run of the copying program and
 * goes on in the next run (a tail call), its position kept in the job, so
 * that the verifier checks a short loop once (a long one is refused as too
 * complex). Returns 1 when it needs another run. */
/* An index into the job's skips, masked so that the verifier sees it bounded
 * (the barrier keeps clang from dropping a mask it can prove useless). */
static __always_inline u32 skip_slot(u32 i) {
    u64 v = i;
    asm volatile("%[v] &= %[mask]" : [v] "+r"(v) : [mask] "i"(H2_SKIPS - 1));
    return v;
}

static __always_inline int h2_walk(struct emit_job_t *j) {
    u64 key = conn_key(j->h.tgid, j->h.fd);
    struct conn_t *c = conns.lookup(&key);
    if (!c || c->gen != j->h.gen) {
        j->walk = 0;
        return 0;
    }
    u32 d = j->h.dir & 1;
    u32 total = j->total;
    if (j->walk == 1) { /* the first run: where the call begins */
        j->walk = 2;
        j->wp = 0;
        j->wknown = 0;
        j->wskip = 0;
        if (c->h2_known[d] && c->h2_next[d] == j->h.call_pos) {
            u32 rem = c->h2_rem[d];
            j->wp = rem;
            j->wknown = 1;
            if (rem && c->h2_skip[d]) {
                j->skip_from[0] = 0;
                j->skip_to[0] = rem < total ? rem : total;
                j->nskip = 1;
                j->wskip = 1;
            }
        }
    }
    u32 p = j->wp, n = j->nskip, known = j->wknown, skip = j->wskip, ok = 1, more = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < H2_WALK; i++) {
        if (p >= total)
            break;
        u8 hdr[9] = {};
        if (total - p < 9 || bpf_probe_read_user(hdr, sizeof(hdr), (const char *)j->buf + p) != 0) {
            ok = 0;
            break;
        }
        if (!known && p == 0 && hdr[0] == 'P' && hdr[1] == 'R' && hdr[2] == 'I' && hdr[3] == ' ' && hdr[4] == '*') {
            p = 24; /* the client preface: the connection's frames begin after its 24 bytes */
            known = 1;
            continue;
        }
        if (!known && h2_frame(hdr) < 0) {
            j->walk = 0; /* not at a frame boundary: copied whole */
            c->h2_known[d] = 0;
            j->nskip = 0;
            return 0;
        }
        known = 1;
        u32 len = ((u32)hdr[0] << 16) | ((u32)hdr[1] << 8) | hdr[2];
        u32 end = p + 9 + len;
        skip = 0;
        if (hdr[3] == 0 && n < H2_SKIPS) { /* DATA: the pad length byte stays */
            u32 from = p + 9 + (hdr[4] & 8 ? 1 : 0);
            u32 to = end < total ? end : total;
            if (from < to) {
                u32 slot = skip_slot(n);
                j->skip_from[slot] = from;
                j->skip_to[slot] = to;
                n++;
            }
            skip = 1;
        }
        p = end;
        if (i == H2_WALK - 1 && p < total)
            more = 1;
    }
    j->wp = p;
    j->nskip = n;
    j->wknown = known;
    j->wskip = skip;
    if (more && j->runs < 24) /* the rest of the chain is the copy's */
        return 1;
    j->walk = 0;
    if (!ok || p < total) { /* lost the frames: what is left is copied, the next call starts afresh */
        c->h2_known[d] = 0;
    } else {
        c->h2_known[d] = 1;
        c->h2_rem[d] = p - total;
        c->h2_skip[d] = skip;
        c->h2_next[d] = j->h.call_pos + total;
    }
    if (!n)
        return 0;
    u32 last = skip_slot(n - 1);
    if (j->skip_to[last] >= total) { /* the call ends inside a DATA payload */
        j->limit = j->skip_from[last];
        n--;
        j->nskip = n;
    }
    u64 shed = j->limit < total ? total - j->limit : 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < H2_SKIPS; i++)
        if (i < n)
            shed += j->skip_to[i] - j->skip_from[i];
    j->h.flags |= FLAG_SHED;
    count(C_SHED_CALLS, 1);
    count(C_SHED_BYTES, shed);
    return 0;
}

/* The body of the copying programs: pieces of at most CHUNK_L bytes, each
 * tagged with its offset in the call, MAX_PIECES of them per run; then the
 * next run (a tail call to itself), or at COPY_LIMIT, a full ring buffer or
 * the end of the tail-call chain, the cut marker for the rest. */
static __always_inline int run_emit_job(void *ctx, int which) {
    u32 zero = 0;
    struct emit_job_t *j = emit_job.lookup(&zero);
    if (!j)
        return 0;
    u64 me = bpf_get_current_pid_tgid();
    if (j->owner != me) {
        count(C_COPY_PREEMPTED, 1);
        return 0;
    }
    j->runs++;
    if (j->walk && h2_walk(j)) {
        if (which == EMIT_TRACEPOINT)
            emit_tracepoints.call(ctx, 0);
        else
            emit_uprobes.call(ctx, 0);
        count(C_EMIT_UNREACHED, 1); /* not reached: the walk's runs end well inside the chain */
        return 0;
    }
    struct ev_hdr h = j->h;
    u32 total = j->total, limit = j->limit;
    const struct iovec *vec = (const struct iovec *)j->vec;
    h.flags &= ~FLAG_CUT;
    if (vec && j->runs == 1 && total <= GATHER_MAX && total <= COPY_LIMIT && limit == total && gather_call(j)) {
        if (j->full)
            emit_cut(&h, 0);
        return 0;
    }
#pragma clang loop unroll(disable)
    for (int i = 0; i < MAX_PIECES; i++) {
        if (j->owner != me) {
            count(C_COPY_PREEMPTED, 1);
            return 0;
        }
        u32 done = j->done, at = j->at, seg = j->seg;
        if (done >= limit || done >= COPY_LIMIT)
            break;
        u32 upto = limit; /* the next skip's start (one buffer: at is done) */
        u32 si = j->si;
        if (si < j->nskip) {
            u32 from = j->skip_from[skip_slot(si)];
            if (done >= from) {
                u32 to = j->skip_to[skip_slot(si)];
                j->done = to;
                j->at = to;
                j->si = si + 1;
                continue;
            }
            upto = from;
        }
        if (at >= seg) { /* this iovec is done: copy from the next in this same iteration */
            struct iovec iv = {};
            u64 vi = j->vi + 1;
            if (!vec || vi >= j->vlen || vi >= MAX_IOV || bpf_probe_read_user(&iv, sizeof(iv), &vec[vi]) != 0)
                break;
            j->vi = vi;
            j->buf = (u64)iv.iov_base;
            seg = iv.iov_len < total - done ? iv.iov_len : total - done;
            j->seg = seg;
            at = 0;
            if (!seg) {
                j->at = 0;
                continue; /* an empty iovec */
            }
        }
        u32 n = seg - at;
        if (n > CHUNK_L)
            n = CHUNK_L;
        if (n > COPY_LIMIT - done)
            n = COPY_LIMIT - done;
        if (n > upto - done)
            n = upto - done;
        h.offset = done;
        if (emit_piece(&h, (const char *)j->buf + at, n) < 0) {
            j->full = 1;
            break;
        }
        j->at = at + n;
        j->done = done + n;
    }
    u32 done = j->done;
    if (done >= total)
        return 0;
    if (done >= limit && !j->full) { /* the rest is a DATA payload left out */
        h.offset = done;
        h.flags |= FLAG_CUT;
        emit_piece(&h, 0, 0);
        return 0;
    }
    if (!j->full && done < COPY_LIMIT && done < limit && (j->at < j->seg || (vec && j->vi + 1 < j->vlen && j->vi + 1 < MAX_IOV))) {
        /* more to copy: the next run (does not return unless the chain is at its end) */
        if (which == EMIT_TRACEPOINT)
            emit_tracepoints.call(ctx, 0);
        else
            emit_uprobes.call(ctx, 0);
    }
    emit_cut(&h, done);
    return 0;
}

int emit_tracepoint(void *ctx) { return run_emit_job(ctx, EMIT_TRACEPOINT); }
int emit_uprobe(struct pt_regs *ctx) { return run_emit_job(ctx, EMIT_UPROBE); }

/* A record's time: a send is dated when its call began, a receive when it
 * returned (the bytes exist from then on). A response read by one thread can
 * be emitted before the request another thread wrote (its probe fires at the
 * write's return, after the peer may have answered): dated so, the request
 * is never later than its response, and user space pairs them whatever the
 * order they arrive in. */
static __always_inline void date_call(struct ev_hdr *h, u64 start) {
    if (h->dir == DIR_SEND && start)
        h->ts = start;
}

static __always_inline void fill_hdr(struct ev_hdr *h, struct conn_t *c, u32 tgid, u32 fd, u8 kind) {
    h->ts = bpf_ktime_get_ns();
    h->gen = c->gen;
    h->tgid = tgid;
    h->fd = fd;
    h->kind = kind;
    h->role = c->role;
    h->proto = c->proto;
}

static __always_inline void emit_simple(struct conn_t *c, u32 tgid, u32 fd, u8 kind) {
    struct ev_hdr *e = events.ringbuf_reserve(sizeof(struct ev_hdr));
    if (!e) {
        ring_full();
        return;
    }
    __builtin_memset(e, 0, sizeof(*e));
    fill_hdr(e, c, tgid, fd, kind);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* Send the 4-tuple once per connection, as soon as the socket is known. */
static __always_inline void emit_addr(struct conn_t *c, u32 tgid, u32 fd) {
    if (c->addr_sent || !c->sk)
        return;
    struct addr_info *a = sk_addr.lookup(&c->sk);
    if (!a)
        return;
    struct ev_addr *e = events.ringbuf_reserve(sizeof(struct ev_addr));
    if (!e) {
        ring_full();
        return;
    }
    __builtin_memset(&e->h, 0, sizeof(e->h));
    fill_hdr(&e->h, c, tgid, fd, KIND_ADDR);
    e->h.len = sizeof(struct addr_info) + 16;
    __builtin_memcpy(&e->a, a, sizeof(*a));
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    c->addr_sent = 1;
}
