/* Go crypto/tls: plaintext at crypto/tls.(*Conn).Read and (*Conn).Write.
 *
 * Uprobes at each function's entry and at every RET instruction (found by
 * user space with a disassembler), never uretprobes: a uretprobe rewrites
 * the return address on the stack, and Go moves goroutine stacks. The
 * register ABI of amd64 (Go >= 1.17): at entry the receiver (*tls.Conn) is in
 * RAX and the buffer in RBX (pointer) and RCX (length); at a RET, n is in RAX
 * (any n > 0 is emitted, whatever the error: Read returns data together with
 * io.EOF, Write a partial n with an error). The entry's stash is keyed by
 * goroutine (g, which Go keeps in R14), not by thread: a goroutine blocked
 * in Read resumes on another OS thread.
 *
 * The socket fd is read through the receiver: tls.Conn.conn (an interface:
 * itab, data) -> *net.TCPConn -> *net.netFD -> poll.FD.Sysfd, at the offsets
 * user space found (DWARF, else the Go version's known layout) and wrote to
 * go_procs for the process. The layout is not trusted blindly: an itab (the
 * conn's concrete type) is confirmed, once per process, when the fd read
 * through it equals the socket a syscall used on the same thread during the
 * same call (socket_trace.c fills go_threads), or, for a Read that parked and
 * resumed on another thread, the socket that thread read last. Calls through
 * an itab not confirmed are counted and dropped, so a conn that is not a
 * *net.TCPConn (a wrapper) is counted, never guessed.
 */

/* go_procs and go_threads are in common.h (socket_trace.c uses them). */

struct go_key_t {
    u64 g;
    u32 tgid;
    u32 pad;
};
struct go_call_t {
    u64 conn;
    u64 buf;
    u64 start;
    /* The connection as the call found it (gen 0: not known then). A Close
     * on another goroutine may end it before the RET probe: Go closes the
     * socket as soon as the last reference is released, sets Sysfd to -1,
     * and the close record can reach the ring before this call's data. The
     * data then goes out on the identity it was written on, at the position
     * the call began at (a tls.Conn serialises its Reads and its Writes). */
    u64 gen;
    u64 pos;
    u64 itab;
    s32 fd;
    u8 dir;
    u8 role;
    u8 proto;
};
BPF_TABLE("lru_hash", struct go_key_t, struct go_call_t, go_calls, 16384);

/* The fd behind a *tls.Conn, and the itab of its net.Conn; -1 when unreadable. */
static __always_inline s64 go_fd(struct go_proc_t *p, u64 conn, u64 *itab) {
    u64 iface = conn + p->conn, data = 0, netfd = 0;
    s64 fd = -1;
    if (bpf_probe_read_user(itab, sizeof(*itab), (void *)iface) != 0 ||
        bpf_probe_read_user(&data, sizeof(data), (void *)(iface + p->iface_data)) != 0 || !data ||
        bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(data + p->tcpconn_fd)) != 0 || !netfd ||
        bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + p->netfd_pfd + p->pfd_sysfd)) != 0)
        return -1;
    return fd;
}

static __always_inline int go_enter(struct pt_regs *ctx, u8 dir) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    if (!tls_traced(tgid))
        return 0;
    struct go_key_t k = {.g = ctx->r14, .tgid = tgid};
    struct go_call_t c = {.conn = ctx->ax, .buf = ctx->bx, .start = bpf_ktime_get_ns(), .fd = -1, .dir = dir};
    struct go_proc_t *p = go_procs.lookup(&tgid);
    if (p) {
        s64 fd = go_fd(p, c.conn, &c.itab);
        if (fd >= 0 && fd <= 0x7fffffff) {
            c.fd = fd;
            u64 key = conn_key(tgid, fd);
            struct conn_t *cn = conns.lookup(&key);
            if (cn && cn->tls && cn->state == ST_HTTP && !cn->shed) {
                c.gen = cn->gen;
                c.pos = cn->pos[2 + (dir & 1)];
                c.role = cn->role;
                c.proto = cn->proto;
            }
        }
    }
    go_calls.update(&k, &c);
    struct go_thread_t t = {.g = ctx->r14, .fd = -1, .tgid = tgid};
    go_threads.update(&tid, &t);
    thread_flag(tid, SLOT_IN_GO, 1);
    return 0;
}

/* A call's data whose connection was closed while the call ran: emitted on
 * the identity the call began on, counted. User space holds a closed
 * connection's streams for a moment so that such data still lands. */
static __always_inline int go_emit_closed(struct pt_regs *ctx, u32 tgid, s32 fd, struct go_call_t *c, s64 n) {
    struct conn_t tmp = {};
    tmp.gen = c->gen;
    tmp.role = c->role;
    tmp.proto = c->proto;
    struct ev_hdr h = {};
    fill_hdr(&h, &tmp, tgid, fd, KIND_DATA);
    h.dir = c->dir;
    date_call(&h, c->start);
    h.flags = FLAG_TLS;
    h.total = n;
    h.call_pos = c->pos;
    count(C_GO_AFTER_CLOSE, 1);
    emit_call(ctx, EMIT_UPROBE, &h, (const char *)c->buf, 0, 0, n);
    return 0;
}

static __always_inline int go_ret(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    struct go_key_t k = {.g = ctx->r14, .tgid = tgid};
    struct go_call_t *cp = go_calls.lookup(&k);
    if (!cp)
        return 0;
    struct go_call_t c = *cp;
    go_calls.delete(&k);
    s32 seen = -1; /* the socket a syscall on this thread used during the call */
    struct go_thread_t *t = go_threads.lookup(&tid);
    if (t && t->g == k.g && t->tgid == tgid) {
        seen = t->fd;
        go_threads.delete(&tid);
        thread_flag(tid, SLOT_IN_GO, 0);
    }
    if (seen < 0) {
        /* A Read that parked (EAGAIN, then the netpoller) resumes on another
         * thread, whose last socket read is what it returns. */
        seen = last_read_get(tid);
    }
    s64 n = ctx->ax;
    if (n <= 0)
        return 0;
    struct go_proc_t *p = go_procs.lookup(&tgid);
    if (!p) {
        /* Not scanned yet (exec'ed moments ago): the probes fire only in an
         * executable the scanner accepted, so the latest known layout is
         * tried; its net.Conn types are confirmed below before any use. */
        struct go_proc_t d = {.conn = GO_DEFAULT_CONN, .iface_data = GO_DEFAULT_IFACE_DATA,
                              .tcpconn_fd = GO_DEFAULT_TCPCONN_FD, .netfd_pfd = GO_DEFAULT_NETFD_PFD,
                              .pfd_sysfd = GO_DEFAULT_PFD_SYSFD};
        go_procs.insert(&tgid, &d);
        count(C_GO_DEFAULT_LAYOUT, 1);
        p = go_procs.lookup(&tgid);
        if (!p)
            return 0;
    }
    /* The fd as the entry read it (a Close during the call sets Sysfd to -1);
     * read now only when the entry could not (the process not scanned yet). */
    u64 itab = c.itab;
    s64 fd = c.fd >= 0 ? c.fd : go_fd(p, c.conn, &itab);
    if (fd < 0 || fd > 0x7fffffff)
        return 0;
    int known = 0;
#pragma unroll
    for (int i = 0; i < GO_ITABS; i++)
        if (itab && p->itab[i] == itab)
            known = 1;
    if (!known) {
        if (seen < 0) {
            count(C_GO_UNCONFIRMED, 1);
            return 0;
        }
        if (fd != seen) {
            count(C_GO_MISMATCH, 1);
            return 0;
        }
#pragma unroll
        for (int i = 0; i < GO_ITABS; i++) {
            if (!p->itab[i]) {
                p->itab[i] = itab;
                break;
            }
        }
        count(C_GO_CONFIRMED, 1);
    }
    if (n > 0x7fffffff)
        n = 0x7fffffff;
    if (c.gen) {
        u64 key = conn_key(tgid, fd);
        struct conn_t *cn = conns.lookup(&key);
        if (!cn || cn->gen != c.gen)
            return go_emit_closed(ctx, tgid, fd, &c, n);
    }
    return tls_emit(ctx, tgid, fd, 0, c.dir, (const char *)c.buf, n, c.start);
}

int go_read_enter(struct pt_regs *ctx) { return go_enter(ctx, DIR_RECV); }
int go_write_enter(struct pt_regs *ctx) { return go_enter(ctx, DIR_SEND); }
int go_return(struct pt_regs *ctx) { return go_ret(ctx); }
