"""The message's tag: AKTO_INJECT_TAGS, each process's tag in the supervisor (PodTags), how it reaches
the workers (KIND_TAGS records through the router) and the messages (the worker)."""

from __future__ import annotations

import json
import os
from collections import Counter
from types import SimpleNamespace

import pytest

from akto_collector.config import Settings
from akto_collector.kernel.records import ADDR, HDR_SIZE, KIND_ADDR, KIND_DATA, KIND_EXIT, KIND_OPEN, RECORD
from akto_collector.supervisor.podtags import PodTags
from akto_collector.supervisor.podwatch import Pod
from akto_collector.supervisor.router import Router
from akto_collector.tags import KIND_TAGS, base_tag, parse_inject_tags, tag_string, tags_record
from akto_collector.worker import Worker
from test_podmeta import CID, POD_CGROUP, UID, fake_process

# -- AKTO_INJECT_TAGS, the tag string, the record -----------------------------------


@pytest.mark.parametrize("raw, want", [
    ("env=prod", (("env", "prod"),)),
    ("env=prod;team=payments", (("env", "prod"), ("team", "payments"))),
    (" env = prod ; team=payments ;", (("env", "prod"), ("team", "payments"))),  # as Akto's collector reads it
    ("url=a=b", (("url", "a=b"),)),
    ("empty=", (("empty", ""),)),
    ('quote="x"', (("quote", '"x"'),)),
    ("app.kubernetes.io/name=shop", (("app.kubernetes.io/name", "shop"),)),
    (";;", ()),
])
def test_parse_inject_tags(raw, want):
    assert parse_inject_tags(raw) == want


@pytest.mark.parametrize("raw, expected", [
    ("novalue", "has no '='"),
    ("=nokey", "empty key"),
    (" =blank", "empty key"),
    ("env=dev;env=prod", "given twice"),
    ('"env"=x', "without spaces, quotes"),
    ("my env=x", "without spaces, quotes"),
])
def test_parse_inject_tags_refuses(raw, expected):
    with pytest.raises(ValueError, match=expected):
        parse_inject_tags(raw)


def test_tag_string_later_sources_win():
    inject = (("env", "prod"), ("app", "fixed"), ("pod", "fixed"))
    assert json.loads(tag_string(inject)) == {"env": "prod", "app": "fixed", "pod": "fixed"}
    assert json.loads(tag_string(inject, {"app": "shop", "pod": "label"}, {"pod": "real"})) == \
        {"env": "prod", "app": "shop", "pod": "real"}
    assert base_tag(()) == "{}"


def test_tags_record_is_a_record_the_worker_reads():
    rec = tags_record(4242, '{"pod":"a"}')
    fields = RECORD.unpack_from(rec)
    assert fields[3] == 4242 and fields[8] == KIND_TAGS and fields[7] == len(rec) - HDR_SIZE
    assert rec[HDR_SIZE:] == b'{"pod":"a"}'
    assert RECORD.unpack_from(tags_record(1, None))[7] == 0
    assert KIND_TAGS > max(KIND_DATA, KIND_OPEN, KIND_ADDR, KIND_EXIT) and KIND_TAGS < 256


# -- PodTags: /proc -> tags -----------------------------------------------------------


def stat(proc, pid, start):
    fields = ["S"] + ["0"] * 18 + [str(start), "0", "0"]
    (proc / str(pid) / "stat").write_text(f"{pid} (python3) " + " ".join(fields) + "\n")


@pytest.fixture
def proc(tmp_path):
    p = tmp_path / "proc"
    (p / "1" / "ns").mkdir(parents=True)
    os.symlink("net:[4026531840]", p / "1" / "ns" / "net")
    stat(p, 1, 1)
    (p / "1" / "cgroup").write_text("0::/init.scope\n")
    fake_process(p, 100, POD_CGROUP, {"HOSTNAME": "shop-api-7f9c"})
    stat(p, 100, 5000)
    fake_process(p, 200, "0::/system.slice/nginx.service\n")
    stat(p, 200, 6000)
    return p


class Pods:
    """What podwatch.PodWatch answers, as a dict."""

    def __init__(self):
        self.by_uid: dict[str, Pod] = {}

    def pod(self, uid):
        return self.by_uid.get(uid)


def tag_of(record: bytes):
    return json.loads(record[HDR_SIZE:]) if record[HDR_SIZE:] else None


def test_a_pod_process_gets_a_record_others_do_not(proc):
    counters: Counter = Counter()
    t = PodTags((("env", "test"),), counters, proc_root=str(proc))
    rec = t.lookup(100)
    assert tag_of(rec) == {"env": "test", "pod_uid": UID, "pod": "shop-api-7f9c", "namespace": "shop",
                           "container_id": CID}
    assert t.lookup(200) is None and t.known[200].tag == '{"env":"test"}'
    assert t.lookup(999) is None and counters["tags.process_gone"] == 1
    assert set(t.known) == {100, 200, 999} and counters["tags.pod_processes"] == 1
    assert t.records() == [rec]
    t.forget(100)
    t.forget(999)
    assert t.records() == [] and 100 not in t.known


def test_scan_takes_every_process_alive(proc):
    t = PodTags((), Counter(), proc_root=str(proc))
    t.scan()
    assert set(t.known) == {1, 100, 200}
    assert [tag_of(r)["pod"] for r in t.records()] == ["shop-api-7f9c"]


def test_the_api_names_the_pod_its_container_and_adds_labels_and_relabels(proc):
    pods = Pods()
    t = PodTags((("app", "fixed"),), Counter(), pods=pods, proc_root=str(proc))
    t.lookup(200)
    before = tag_of(t.lookup(100))
    assert before["pod"] == "shop-api-7f9c" and before["app"] == "fixed"
    assert t.refresh({UID}) == []  # nothing new said about it: nothing to send
    pods.by_uid[UID] = Pod("shop-api-7f9c6d5b8-x2k4q", "shop-prod", {"app": "shop-api", "pod": "a-label"},
                           {CID: "api"})
    (rec,) = t.refresh({UID, "some-other-pod"})
    assert tag_of(rec) == {"app": "shop-api", "pod": "shop-api-7f9c6d5b8-x2k4q", "namespace": "shop-prod",
                           "pod_uid": UID, "container_id": CID, "container": "api"}
    assert t.records() == [rec]
    del pods.by_uid[UID]  # the pod left the API before its process exited: /proc's word again
    (rec,) = t.refresh({UID})
    assert tag_of(rec) == before


def test_sweep_forgets_the_gone_and_looks_again_at_reused_pids(proc):
    counters: Counter = Counter()
    t = PodTags((), counters, proc_root=str(proc))
    t.scan()
    assert t.sweep() == []  # nothing changed
    stat(proc, 100, 7777)  # pid 100 is another process now (its EXIT was lost): still in the pod
    (proc / "200" / "stat").unlink()
    os.rename(proc / "200", proc / "gone")
    (rec,) = t.sweep()
    assert RECORD.unpack_from(rec)[3] == 100 and tag_of(rec)["pod"] == "shop-api-7f9c"
    assert t.known[100].start == 7777 and 200 not in t.known and counters["tags.pid_reused"] == 1
    # A pod process gone without its EXIT: the workers are told to forget it.
    os.rename(proc / "100", proc / "gone100")
    (rec,) = t.sweep()
    assert RECORD.unpack_from(rec)[3] == 100 and tag_of(rec) is None


# -- the router: tags ahead of the records, never lost to a full queue ---------------


def raw_record(kind, tgid, fd=7, payload=b""):
    return RECORD.pack(0, 1, 0, tgid, fd, len(payload), 0, len(payload), kind, 0, 0, 1, 1, 0) + payload


class Ring:
    def pending_bytes(self):
        return 0


class Probes:
    ring = Ring()

    def __init__(self, records):
        self.records = records

    def drain(self, out):
        out.extend(self.records)
        self.records = []


class Handle:
    queued_bytes = 0

    def __init__(self, accept=True):
        self.blobs = []
        self.accept = accept

    def submit(self, blob, records):
        if self.accept:
            self.blobs.append(blob)
        return self.accept


class Lookups:
    def __init__(self):
        self.known = {}
        self.asked = []

    def lookup(self, pid):
        self.asked.append(pid)
        self.known[pid] = True
        return tags_record(pid, '{"pod":"p"}') if pid == 100 else None


def test_a_process_is_looked_up_once_at_its_first_open_or_addr_and_its_tag_goes_first_to_every_worker():
    lookups = Lookups()
    router = Router(2, lookups)
    data = raw_record(KIND_DATA, 100, payload=b"GET / HTTP/1.1\r\n\r\n")
    router.drain(Probes([data, raw_record(KIND_OPEN, 100), raw_record(KIND_ADDR, 100, fd=8),
                         raw_record(KIND_OPEN, 200), data]))
    assert lookups.asked == [100, 200]  # data records never ask
    workers = [Handle(), Handle()]
    router.flush(workers)
    tag = tags_record(100, '{"pod":"p"}')
    for w in workers:
        (blob,) = w.blobs
        assert blob.startswith(tag)
    assert sum(len(w.blobs[0]) for w in workers) == 2 * len(tag) + len(data) * 2 + 3 * HDR_SIZE
    assert router.control == [[], []]


def test_tags_wait_for_a_batch_that_is_accepted():
    lookups = Lookups()
    router = Router(1, lookups)
    router.drain(Probes([raw_record(KIND_OPEN, 100)]))
    full = Handle(accept=False)
    router.flush([full])  # dropped (and counted by the handle): the tag waits
    assert router.control == [[tags_record(100, '{"pod":"p"}')]]
    ok = Handle()
    router.broadcast([tags_record(100, None)])
    router.flush([ok])  # no data this time: the tags go alone, in order
    assert ok.blobs == [tags_record(100, '{"pod":"p"}') + tags_record(100, None)] and router.control == [[]]


# -- the worker: the tag of each process's messages -----------------------------------


def addr(tgid, fd):
    payload = ADDR.pack(2, 8080, 41000, 0, bytes([127, 0, 0, 1]) + bytes(12), bytes([127, 0, 0, 1]) + bytes(12),
                        b"python3".ljust(16, b"\0"))
    return RECORD.pack(0, 1, 0, tgid, fd, 0, 0, len(payload), KIND_ADDR, 0, 0, 1, 1, 0) + payload


class Conn:
    """The records of one served connection, numbered as the kernel does."""

    def __init__(self, tgid, fd):
        self.tgid, self.fd, self.pos = tgid, fd, [0, 0]

    def pair(self, path):
        req = f"GET {path} HTTP/1.1\r\nHost: svc\r\n\r\n".encode()
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        out = []
        for direction, data in ((1, req), (0, resp)):
            out.append(RECORD.pack(0, 1, self.pos[direction], self.tgid, self.fd, len(data), 0, len(data), KIND_DATA,
                                   0, direction, 1, 1, 0) + data)
            self.pos[direction] += len(data)
        return b"".join(out)


def test_the_worker_tags_each_process_messages_as_told_and_forgets_at_exit(tmp_path):
    out = tmp_path / "pairs.jsonl"
    settings = Settings(workers=1, inject_tags=(("env", "test"),), node_name="n", daemonset_id="ds")
    w = Worker(0, settings, str(out))
    a, b = Conn(100, 7), Conn(200, 9)
    w.handle_batch(tags_record(100, '{"env":"test","pod":"a"}') + addr(100, 7) + a.pair("/1") + addr(200, 9)
                   + b.pair("/other"))
    w.handle_batch(tags_record(100, '{"env":"test","pod":"b"}') + a.pair("/2"))  # an open connection is relabelled
    w.handle_batch(tags_record(100, None) + a.pair("/3"))
    w.handle_batch(tags_record(100, '{"pod":"c"}') + raw_record(KIND_EXIT, 100))
    assert w.tags == {} and w.counters["worker.records"] == 2 + 4 + 2 + 2 + 1
    w.sink.flush(5)
    tags = {m["path"]: json.loads(m["tag"]) for m in map(json.loads, out.read_text().splitlines())}
    assert tags == {"/1": {"env": "test", "pod": "a"}, "/other": {"env": "test"}, "/2": {"env": "test", "pod": "b"},
                    "/3": {"env": "test"}}


def test_a_new_worker_is_told_every_tag_first():
    from test_arbiter import make

    a = make(workers=1)
    a.pod_tags.known[100] = SimpleNamespace(tag='{"pod":"p"}', pod=None, start=1)
    a.router.control[0].append(b"stale")
    w = a.spawn_worker(0)
    assert w.queue.get_nowait() == (tags_record(100, '{"pod":"p"}'), 0) and a.router.control[0] == []


def test_a_lookup_that_fails_unexpectedly_is_counted_and_logged_and_the_process_keeps_the_fixed_tags(proc):
    import structlog.testing

    class Broken(Pods):
        def pod(self, uid):
            raise RuntimeError("boom")

    counters: Counter = Counter()
    with structlog.testing.capture_logs() as logs:
        t = PodTags((("env", "t"),), counters, pods=Broken(), proc_root=str(proc), log=structlog.get_logger())
        assert t.lookup(100) is None
    assert counters["tags.lookup_failed"] == 1 and t.known[100].tag == '{"env":"t"}'
    assert logs[0]["event"] == "tag_lookup_failed" and logs[0]["pid"] == 100
