/* Socket syscalls: connection lifecycle and plaintext data, by one of two paths.
 *
 * With the sock_{send,recv}_length tracepoints (Linux 6.3+, SOCK_TRACEPOINTS):
 * they fire only inside socket I/O, after the bytes moved, so a call on a
 * file or a pipe costs nothing at all; the call's arguments are read from the
 * task's saved user registers (the syscall ABI) and the data is emitted
 * there. The read/write syscall tracepoints are not attached.
 *
 * Without them (the fallback; or forced by AKTO_SOCK_TRACEPOINTS=off): enter
 * probes stash the arguments per thread and exit probes emit what the call
 * transferred. The fds known to be sockets are those seen in accept/connect;
 * an fd opened before the collector started is taken only when its data
 * starts like HTTP (user space then checks in /proc that it is a socket), so
 * a file or a pipe costs a stash and a lookup and creates no entry.
 *
 * The loader attaches TRACEPOINT programs always, SOCK_DATA programs on the
 * first path and SYSCALL_DATA programs on the second.
 */

#define SC_BUF 1
#define SC_IOV 2
#define SC_MSG 3
#define SC_SENDFILE 4

#define MSG_PEEK_FLAG 2
#define EINPROGRESS_ERR 115

struct sc_args_t {
    u64 buf;  /* buffer, iovec array, or user_msghdr */
    u64 vlen; /* iovec count */
    u64 sk;
    u64 start; /* when the call began */
    s32 fd;
    u8 kind;
    u8 dir;
    u8 is_sock;
    u8 pad;
};
BPF_TABLE("lru_hash", u32, struct sc_args_t, sc_args, 16384);

struct open_args_t {
    u64 addr;
    s32 fd;
    u8 role;
};
BPF_TABLE("lru_hash", u32, struct open_args_t, open_args, 16384);
/* Processes whose first connection has been announced to the supervisor
 * (open_exit), and when it was last woken for one: at most once per
 * WAKE_GAP_NS (set by the loader: records.WAKE_GAP_MS) node-wide (a node may start thousands of processes a second,
 * and every name lookup connects a UDP socket); the supervisor drains again
 * soon after a wake-up (arbiter.WOKEN_FOLLOW_MS), which covers those it was
 * not woken for. */
BPF_TABLE("lru_hash", u32, u8, announced, 16384);
BPF_ARRAY(woken_at, u64, 1);

struct user_msghdr_min {
    void *msg_name;
    int msg_namelen;
    struct iovec *msg_iov;
    __kernel_size_t msg_iovlen;
};

static __always_inline int stash(s32 fd, u64 buf, u64 vlen, u8 kind, u8 dir) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    if (ignored(tgid) || fd < 0)
        return 0;
    struct sc_args_t a = {};
    a.fd = fd;
    a.buf = buf;
    a.vlen = vlen;
    a.kind = kind;
    a.dir = dir;
    if (dir == DIR_SEND)
        a.start = bpf_ktime_get_ns(); /* see date_call */
    sc_args.update(&tid, &a);
    return 0;
}

/* The arguments of the socket call this thread is in, from its saved user
 * registers (x86-64 syscall ABI): 0 when it is not a call we trace (kernel
 * threads and io_uring workers have no user registers; splice, sendmmsg and
 * the like are counted, not traced; sendfile has its own probes). */
static __always_inline int args_from_regs(struct sc_args_t *a, u8 dir) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
    /* dx, si, di, orig_ax, ip, cs lie next to each other in x86-64's
     * pt_regs: one read instead of five (this runs for every socket call). */
    struct { u64 dx, si, di, orig_ax, ip, cs; } r = {};
    if (bpf_probe_read_kernel(&r, sizeof(r), &regs->dx) != 0 || (r.cs & 3) != 3)
        return 0;
    a->fd = r.di;
    a->buf = r.si;
    a->vlen = r.dx;
    a->dir = dir;
    switch (r.orig_ax) {
    case 0:  /* read */
    case 45: /* recvfrom */
        a->kind = dir == DIR_RECV ? SC_BUF : 0;
        break;
    case 1:  /* write */
    case 44: /* sendto */
        a->kind = dir == DIR_SEND ? SC_BUF : 0;
        break;
    case 19: /* readv */
        a->kind = dir == DIR_RECV ? SC_IOV : 0;
        break;
    case 20: /* writev */
        a->kind = dir == DIR_SEND ? SC_IOV : 0;
        break;
    case 47: /* recvmsg */
        a->kind = dir == DIR_RECV ? SC_MSG : 0;
        break;
    case 46: /* sendmsg */
        a->kind = dir == DIR_SEND ? SC_MSG : 0;
        break;
    case 40: /* sendfile: its exit probe accounts for the bytes */
        return -1;
    default:
        a->kind = 0;
    }
    return a->kind ? 1 : 0;
}

/* Socket bytes moved by a call we do not trace (splice, sendmmsg/recvmmsg,
 * io_uring issued inline): not captured, but counted, so the loss shows. */
static __always_inline void count_untraced(int ret) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
    u64 cs = 0;
    bpf_probe_read_kernel(&cs, sizeof(cs), &regs->cs);
    if ((cs & 3) == 3)
        count(C_UNTRACED_BYTES, ret);
}

TRACEPOINT(sock, inet_sock_set_state) {
    if (args->newstate != 1 /* TCP_ESTABLISHED */ || args->protocol != IPPROTO_TCP)
        return 0;
    struct addr_info a = {};
    a.family = args->family;
    a.sport = args->sport;
    a.dport = args->dport;
    if (args->family == AF_INET) {
        __builtin_memcpy(a.saddr, args->saddr, 4);
        __builtin_memcpy(a.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(a.saddr, args->saddr_v6, 16);
        __builtin_memcpy(a.daddr, args->daddr_v6, 16);
    }
    u64 sk = (u64)args->skaddr;
    sk_addr.update(&sk, &a);
    return 0;
}

/* First buffer of a call, for the "does this look like HTTP" test. */
static __always_inline const char *first_buf(struct sc_args_t *a, u32 ret, u32 *len, u64 *vec, u64 *vlen) {
    *vec = a->buf;
    *vlen = a->vlen;
    if (a->kind == SC_BUF) {
        *len = ret;
        return (const char *)a->buf;
    }
    if (a->kind == SC_MSG) {
        struct user_msghdr_min m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)a->buf) != 0)
            return 0;
        *vec = (u64)m.msg_iov;
        *vlen = m.msg_iovlen;
    }
    struct iovec iv = {};
    if (*vlen == 0 || bpf_probe_read_user(&iv, sizeof(iv), (void *)*vec) != 0)
        return 0;
    *len = iv.iov_len < ret ? iv.iov_len : ret;
    return (const char *)iv.iov_base;
}

/* A socket call (or, on the fallback path, a call on an fd that may be one)
 * that moved ret > 0 bytes: name its fd for the TLS and Go probes, and emit
 * its plaintext. */
static __always_inline int on_socket_call(void *ctx, struct sc_args_t *ap, long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    struct sc_args_t a = *ap;
    u64 *slot = thread_slot(tid);
    u32 in_call = slot_word(slot, tid) & SLOT_IN_CALL;
    struct tls_call_t *t = 0;
    if (in_call) {
        /* In a TLS call, or not known (common.h, last_read_fd): look. */
        in_call = 0;
        struct go_thread_t *gt = go_threads.lookup(&tid);
        if (gt && gt->tgid == tgid) {
            gt->fd = a.fd; /* under a Go TLS call: the socket that confirms its layout */
            in_call |= SLOT_IN_GO;
        }
        t = tls_calls.lookup(&tid);
        if (t)
            in_call |= SLOT_IN_TLS;
    }
    if (a.dir == DIR_RECV && slot)
        *slot = ((u64)tid << 32) | in_call | ((u32)a.fd & SLOT_FD);
    u64 key = conn_key(tgid, a.fd);

    /* Inside a TLS call: these are the ciphertext of its plaintext. Name the
     * fd for the TLS return probe and keep the bytes out. */
    if (t) {
        t->fd = a.fd;
        t->sk = a.sk;
        return 0;
    }

    /* A key is in conns or in skipped, never in both (judge_not_http and
     * conn_get_tls move it): conns first, since what is traced is looked up
     * on every call; skipped only when that misses. */
    struct conn_t *c = conns.lookup(&key);
    if (!c) {
        struct skip_t *sp = skipped.lookup(&key);
        if (sp) {
            /* Not HTTP so far; remember the socket in case TLS plaintext shows up. */
            if (!sp->sk)
                sp->sk = a.sk;
            return 0;
        }
        if (a.is_sock && !ignored(tgid))
            c = conn_get(key, 1, 0, ROLE_UNKNOWN);
    }
    if (!c) {
        /* The fallback path, an fd not seen opened: a connection from before
         * the collector started, or a file. Taken only when its data starts
         * like HTTP (and checked in /proc by user space); anything else
         * costs no table entry. */
        if (a.is_sock || a.kind == SC_SENDFILE)
            return 0;
        u32 flen = 0;
        u64 vec = 0, vlen = 0;
        const char *first = first_buf(&a, ret, &flen, &vec, &vlen);
        if (!first || classify(first, flen) <= 0)
            return 0;
        c = conn_get(key, 1, 0, ROLE_UNKNOWN);
        if (!c)
            return 0;
    }
    c->last_ts = bpf_ktime_get_ns();
    if (!c->sk)
        c->sk = a.sk;
    if (c->tls) {
        count(C_PLAIN_ON_TLS, 1);
        return 0;
    }
    if (!CAPTURE_PLAIN)
        return 0;

    struct ev_hdr h = {};
    if (a.kind == SC_SENDFILE) {
        /* The body went from the page cache, never through user memory:
         * tell user space how many bytes it must skip. */
        if (c->state != ST_HTTP)
            return 0;
        fill_hdr(&h, c, tgid, a.fd, KIND_DATA);
        h.dir = a.dir;
        h.total = ret;
        h.call_pos = __sync_fetch_and_add(&c->pos[a.dir & 1], ret);
        emit_cut(&h, 0);
        return 0;
    }

    u32 flen = 0;
    u64 vec = 0, vlen = 0;
    const char *first = first_buf(&a, ret, &flen, &vec, &vlen);
    if (!first)
        return 0;
    if (!admit(key, c, a.dir, first, flen, ret))
        return 0;
    emit_addr(c, tgid, a.fd);
    fill_hdr(&h, c, tgid, a.fd, KIND_DATA);
    h.dir = a.dir;
    date_call(&h, a.start);
    h.total = ret;
    h.call_pos = __sync_fetch_and_add(&c->pos[a.dir & 1], ret);
    if (a.kind == SC_BUF && ret <= CHUNK_L && !(h.proto == PROTO_HTTP2 && shedding())) {
        /* One buffer that fits one piece (a request read, most writes): sent
         * from here. The copying program would cost a tail call, its job
         * written to a map and read back, and its code brought into the
         * cache on every such call; at a few thousand calls a second those
         * misses are most of a call's time. */
        if (emit_piece(&h, first, ret) < 0)
            emit_cut(&h, 0);
    } else if (a.kind == SC_BUF)
        emit_call(ctx, EMIT_TRACEPOINT, &h, first, 0, 0, ret);
    else
        emit_call(ctx, EMIT_TRACEPOINT, &h, 0, (const struct iovec *)vec, vlen, ret);
    return 0;
}


/* The sock tracepoints' path: the socket is certain, the arguments come
 * from the registers. */
static __always_inline int sock_data(void *ctx, void *sk, u16 family, u16 protocol, long ret, u8 dir) {
    if (ret <= 0 || (family != AF_INET && family != AF_INET6) || protocol != IPPROTO_TCP)
        return 0;
    /* The collector's own processes are left out where a connection would be
     * made for them (on_socket_call), not here: a hash lookup less on every
     * call of every connection that is traced. */
    struct sc_args_t a = {};
    int found = args_from_regs(&a, dir);
    if (found <= 0) {
        if (found == 0)
            count_untraced(ret);
        return 0;
    }
    a.sk = (u64)sk;
    a.is_sock = 1;
    return on_socket_call(ctx, &a, ret);
}

SOCK_DATA(sock, sock_recv_length) {
    if (args->flags & MSG_PEEK_FLAG)
        return 0;
    return sock_data(args, args->sk, args->family, args->protocol, args->ret, DIR_RECV);
}

SOCK_DATA(sock, sock_send_length) {
    return sock_data(args, args->sk, args->family, args->protocol, args->ret, DIR_SEND);
}

/* The fallback path's exit: what the stash began. A thread that was already
 * blocked in the call when the probes were attached has no stash: its
 * arguments are still in its saved registers. */
static __always_inline int on_exit(void *ctx, long ret, u8 dir) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct sc_args_t a = {};
    struct sc_args_t *ap = sc_args.lookup(&tid);
    if (ap) {
        a = *ap;
        sc_args.delete(&tid);
    } else if (ret <= 0 || ignored(id >> 32) || args_from_regs(&a, dir) <= 0) {
        return 0;
    }
    if (ret <= 0)
        return 0;
    return on_socket_call(ctx, &a, ret);
}

SYSCALL_DATA(syscalls, sys_enter_read) { return stash(args->fd, (u64)args->buf, 0, SC_BUF, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_exit_read) { return on_exit(args, args->ret, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_enter_write) { return stash(args->fd, (u64)args->buf, 0, SC_BUF, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_exit_write) { return on_exit(args, args->ret, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_enter_readv) { return stash(args->fd, (u64)args->vec, args->vlen, SC_IOV, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_exit_readv) { return on_exit(args, args->ret, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_enter_writev) { return stash(args->fd, (u64)args->vec, args->vlen, SC_IOV, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_exit_writev) { return on_exit(args, args->ret, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_enter_recvfrom) {
    if (args->flags & MSG_PEEK_FLAG)
        return 0; /* the same bytes will be read again */
    return stash(args->fd, (u64)args->ubuf, 0, SC_BUF, DIR_RECV);
}
SYSCALL_DATA(syscalls, sys_exit_recvfrom) { return on_exit(args, args->ret, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_enter_sendto) { return stash(args->fd, (u64)args->buff, 0, SC_BUF, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_exit_sendto) { return on_exit(args, args->ret, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_enter_recvmsg) {
    if (args->flags & MSG_PEEK_FLAG)
        return 0;
    return stash(args->fd, (u64)args->msg, 0, SC_MSG, DIR_RECV);
}
SYSCALL_DATA(syscalls, sys_exit_recvmsg) { return on_exit(args, args->ret, DIR_RECV); }
SYSCALL_DATA(syscalls, sys_enter_sendmsg) { return stash(args->fd, (u64)args->msg, 0, SC_MSG, DIR_SEND); }
SYSCALL_DATA(syscalls, sys_exit_sendmsg) { return on_exit(args, args->ret, DIR_SEND); }
TRACEPOINT(syscalls, sys_enter_sendfile64) { return stash(args->out_fd, 0, 0, SC_SENDFILE, DIR_SEND); }
TRACEPOINT(syscalls, sys_exit_sendfile64) { return on_exit(args, args->ret, DIR_SEND); }

/* accept/connect: a connection we saw open, with its role and peer. */
static __always_inline int open_enter(s32 fd, u64 addr, u8 role) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    if (ignored(tgid))
        return 0;
    struct open_args_t o = {};
    o.fd = fd;
    o.addr = addr;
    o.role = role;
    open_args.update(&tid, &o);
    return 0;
}

static __always_inline int open_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = id;
    struct open_args_t *op = open_args.lookup(&tid);
    if (!op)
        return 0;
    struct open_args_t o = *op;
    open_args.delete(&tid);
    s32 fd;
    if (o.role == ROLE_SERVER) {
        if (ret < 0)
            return 0;
        fd = ret;
    } else {
        if (ret != 0 && ret != -EINPROGRESS_ERR)
            return 0;
        fd = o.fd;
    }
    struct sockaddr_in6 sa = {};
    if (!o.addr || bpf_probe_read_user(&sa, sizeof(sa), (void *)o.addr) != 0)
        sa.sin6_family = 0;
    /* Unix sockets and the like are not ours; accept() without an address
     * buffer is (family 0) and learns its addresses from the socket. */
    if (sa.sin6_family != 0 && sa.sin6_family != AF_INET && sa.sin6_family != AF_INET6)
        return 0;
    u64 key = conn_key(tgid, fd);
    skipped.delete(&key);
    conns.delete(&key); /* an fd reused without a close we saw */
    struct conn_t *c = conn_get(key, 1, 1, o.role);
    if (!c)
        return 0;
    struct ev_addr *e = events.ringbuf_reserve(sizeof(struct ev_addr));
    if (!e) {
        count(C_RB_FULL, 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    fill_hdr(&e->h, c, tgid, fd, KIND_OPEN);
    e->h.len = sizeof(struct addr_info) + 16;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    /* The peer, from the caller's sockaddr; the 4-tuple follows later. */
    e->a.family = sa.sin6_family;
    e->a.dport = bpf_ntohs(sa.sin6_port);
    if (sa.sin6_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
        __builtin_memcpy(e->a.daddr, &s4->sin_addr, 4);
    } else if (sa.sin6_family == AF_INET6) {
        __builtin_memcpy(e->a.daddr, &sa.sin6_addr, 16);
    }
    /* A process's first connection wakes the supervisor, which looks the
     * process up (its pod, from /proc) on this record: drained at the paced
     * wait (up to 150 ms), a short-lived client (a job, an exec probe's
     * curl) would be gone by then. Forced: a plain wake-up is sent only
     * when the ring was empty. One per process, not per connection. */
    u64 wake = BPF_RB_NO_WAKEUP;
    if (!announced.lookup(&tgid)) {
        u8 one = 1;
        u32 zero = 0;
        announced.update(&tgid, &one);
        u64 *at = woken_at.lookup(&zero);
        u64 now = bpf_ktime_get_ns();
        if (at && now - *at >= WAKE_GAP_NS) {
            *at = now;
            wake = BPF_RB_FORCE_WAKEUP;
        }
    }
    events.ringbuf_submit(e, wake);
    return 0;
}

TRACEPOINT(syscalls, sys_enter_accept4) { return open_enter(args->fd, (u64)args->upeer_sockaddr, ROLE_SERVER); }
TRACEPOINT(syscalls, sys_exit_accept4) { return open_exit(args->ret); }
TRACEPOINT(syscalls, sys_enter_accept) { return open_enter(args->fd, (u64)args->upeer_sockaddr, ROLE_SERVER); }
TRACEPOINT(syscalls, sys_exit_accept) { return open_exit(args->ret); }
TRACEPOINT(syscalls, sys_enter_connect) { return open_enter(args->fd, (u64)args->uservaddr, ROLE_CLIENT); }
TRACEPOINT(syscalls, sys_exit_connect) { return open_exit(args->ret); }

TRACEPOINT(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    u64 key = conn_key(tgid, args->fd);
    struct skip_t *sp = skipped.lookup(&key);
    if (sp) {
        /* Seen open, then judged not HTTP: user space holds its OPEN metadata. */
        if (sp->opened) {
            struct conn_t tmp = {};
            tmp.gen = sp->gen;
            emit_simple(&tmp, tgid, args->fd, KIND_CLOSE);
        }
        skipped.delete(&key);
        return 0;
    }
    struct conn_t *c = conns.lookup(&key);
    if (!c)
        return 0;
    emit_simple(c, tgid, args->fd, KIND_CLOSE);
    conns.delete(&key);
    return 0;
}

TRACEPOINT(sched, sched_process_exec) {
    struct ev_hdr *e = events.ringbuf_reserve(sizeof(struct ev_hdr));
    if (!e) {
        count(C_RB_FULL, 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->tgid = args->pid;
    e->kind = KIND_EXEC;
    /* Wake the reader when the ring was empty (a plain wake-up): the scanner
     * should see an exec soon, and under traffic a drain comes soon anyway.
     * Not forced: a node may exec thousands of processes a second. */
    events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, tgid = id >> 32;
    /* A thread that dies inside a call leaves its stash: forget it. */
    sc_args.delete(&tid);
    open_args.delete(&tid);
    tls_calls.delete(&tid);
    last_read_forget(tid);
    go_threads.delete(&tid);
    if (tid != tgid) {
        /* sched_process_fork cannot tell a thread from a process: what it
         * copied for a thread goes with the thread. */
        tls_pids.delete(&tid);
        ignore_tgid.delete(&tid);
    }
    if (!args->group_dead)
        return 0; /* the process lives on */
    /* Its entries go with it (its connections: user space, which knows
     * them, at the next clean-up of the table). */
    tls_pids.delete(&tgid);
    go_procs.delete(&tgid);
    announced.delete(&tgid);
    if (ignored(tgid)) {
        ignore_tgid.delete(&tgid);
        return 0;
    }
    struct ev_hdr *e = events.ringbuf_reserve(sizeof(struct ev_hdr));
    if (!e) {
        count(C_RB_FULL, 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->tgid = id >> 32;
    e->kind = KIND_EXIT;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

/* A fork of an allowed (FILTER_TLS_PIDS) or ignored process is allowed or
 * ignored from its first instruction, not at the next scan: nginx's workers,
 * the collector's own. */
TRACEPOINT(sched, sched_process_fork) {
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    u32 child = args->child_pid;
    u8 one = 1;
    if (ignored(parent))
        ignore_tgid.update(&child, &one);
#if FILTER_TLS_PIDS
    if (tls_pids.lookup(&parent))
        tls_pids.update(&child, &one);
#endif
    struct go_proc_t *g = go_procs.lookup(&parent);
    if (g) {
        struct go_proc_t copy = *g;
        go_procs.update(&child, &copy);
    }
    return 0;
}
