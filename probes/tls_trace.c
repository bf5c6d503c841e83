/* TLS library calls: plaintext at SSL_read/SSL_write (and _ex), GnuTLS and
 * NSS equivalents, tied to the socket without library-version offsets.
 *
 * The entry probe remembers (thread, session, buffer). A socket syscall on
 * that thread during the call names the fd (socket_trace.c fills tls_calls).
 * When there is none (data already buffered in the library, or node's memory
 * BIOs) the fd last seen for this session is used, then the socket this
 * thread read last. The return probe emits the plaintext with that fd.
 */

#define RET_INT 1   /* int: bytes or <= 0 (upper 32 bits undefined) */
#define RET_EX 2    /* int 1 on success, bytes through the size_t* argument */
#define RET_SSIZE 3 /* ssize_t */

/* (tgid, session) -> fd: forked workers have sessions at the same addresses. */
struct ssl_key_t {
    u64 ssl;
    u32 tgid;
    u32 pad;
};
BPF_TABLE("lru_hash", struct ssl_key_t, s32, ssl_fd, 65536);

/* Emit n bytes of TLS plaintext at buf, read or written (dir) on socket fd
 * of process tgid (sk: the socket pointer, when known; start: when the call
 * began, see date_call). Shared by every TLS
 * library's probes, Go's included. */
static __always_inline int tls_emit(void *ctx, u32 tgid, s32 fd, u64 sk, u8 dir, const char *buf, s64 n, u64 start) {
    u64 key = conn_key(tgid, fd);
    struct conn_t *c = conn_get_tls(key);
    if (!c)
        return 0;
    if (!c->sk)
        c->sk = sk;
    if (!c->tls) {
        c->tls = 1;
        c->state = ST_UNKNOWN;
        c->probation = 0;
    }
    c->last_ts = bpf_ktime_get_ns();
    u32 len = n;
    if (!admit(key, c, dir, buf, len, len))
        return 0;
    emit_addr(c, tgid, fd);
    struct ev_hdr h = {};
    fill_hdr(&h, c, tgid, fd, KIND_DATA);
    h.dir = dir;
    date_call(&h, start);
    h.flags = FLAG_TLS;
    h.total = len;
    h.call_pos = __sync_fetch_and_add(&c->pos[2 + (dir & 1)], len);
    emit_call(ctx, EMIT_UPROBE, &h, buf, 0, 0, len);
    return 0;
}

/* May this process's TLS be traced? (the collector's own: never; with
 * FILTER_TLS_PIDS, only the pids the scanner allowed) */
static __always_inline int tls_traced(u32 tgid) {
    if (ignored(tgid))
        return 0;
#if FILTER_TLS_PIDS
    if (!tls_pids.lookup(&tgid))
        return 0;
#endif
    return 1;
}

static __always_inline int tls_enter(struct pt_regs *ctx, u8 dir, int ex) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    if (!tls_traced(tgid))
        return 0;
    struct tls_call_t t = {};
    t.ssl = PT_REGS_PARM1(ctx);
    t.buf = PT_REGS_PARM2(ctx);
    t.lenptr = ex ? PT_REGS_PARM4(ctx) : 0;
    t.fd = -1;
    t.dir = dir;
    t.start = bpf_ktime_get_ns();
    tls_calls.update(&tid, &t);
    thread_flag(tid, SLOT_IN_TLS, 1);
    return 0;
}

static __always_inline int tls_exit(struct pt_regs *ctx, int retkind) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    struct tls_call_t *tp = tls_calls.lookup(&tid);
    if (!tp)
        return 0;
    struct tls_call_t t = *tp;
    tls_calls.delete(&tid);
    thread_flag(tid, SLOT_IN_TLS, 0);

    s64 n = 0;
    if (retkind == RET_INT) {
        n = (s32)PT_REGS_RC(ctx);
    } else if (retkind == RET_EX) {
        if ((s32)PT_REGS_RC(ctx) != 1)
            return 0;
        u64 got = 0;
        if (bpf_probe_read_user(&got, sizeof(got), (void *)t.lenptr) != 0)
            return 0;
        n = got;
    } else {
        n = (s64)PT_REGS_RC(ctx);
    }
    if (n <= 0)
        return 0;
    if (n > 0x7fffffff)
        n = 0x7fffffff;

    struct ssl_key_t sk = {.ssl = t.ssl, .tgid = tgid};
    s32 fd = t.fd;
    if (fd < 0) {
        s32 *f = ssl_fd.lookup(&sk);
        if (f)
            fd = *f;
    }
    if (fd < 0) {
        fd = last_read_get(tid);
    }
    if (fd < 0) {
        count(C_TLS_NO_FD, 1);
        return 0;
    }
    ssl_fd.update(&sk, &fd);

    return tls_emit(ctx, tgid, fd, t.sk, t.dir, (const char *)t.buf, n, t.start);
}

int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, DIR_RECV, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, DIR_RECV, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, DIR_SEND, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, DIR_SEND, 1); }
int tls_exit_int(struct pt_regs *ctx) { return tls_exit(ctx, RET_INT); }
int tls_exit_ex(struct pt_regs *ctx) { return tls_exit(ctx, RET_EX); }
int tls_exit_ssize(struct pt_regs *ctx) { return tls_exit(ctx, RET_SSIZE); }

/* SSL_free: the session pointer may be reused for another socket. */
int tls_free_enter(struct pt_regs *ctx) {
    struct ssl_key_t sk = {.ssl = PT_REGS_PARM1(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
    ssl_fd.delete(&sk);
    return 0;
}
