"""A call a cluster client makes is sent again only when the API server did not act on it:
a 429 or 503 with Retry-After (after it, at most 3 times) and a read whose connection
broke before any answer (once); never after a refused connection or a read timeout.
Against a TCP server on 127.0.0.1 that counts the requests it receives (urllib3's own
retries are below any seam a fake could stand in)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from twinhull.clusters.kube import (
    WRITE_SCOPE,
    Abandoned,
    ClusterUnavailable,
    Kube,
    WriteScope,
    configuration,
)

Answer = Any
"""``"close"`` (close the connection without an answer), ``"hang"`` (never answer),
``"trickle"`` (a 200 whose head and each byte of its body ``{}`` come 0.35 s apart: no
read waits past the client's read timeout of 0.4 s, the whole answer takes 1.05 s), or
``(status, headers)`` (an answer with a JSON body ``{}``)."""


class Server:
    """Answers the n-th request (from 0) as ``behave(n)`` says, and keeps each request's
    first line. Every connection is closed after one request."""

    def __init__(self, behave: Callable[[int], Answer]) -> None:
        self.behave = behave
        self.requests: list[str] = []
        self.stopped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            conn.settimeout(2.0)
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:])
                           if k.lower() == "content-length"), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(lines[0])
            answer = self.behave(len(self.requests) - 1)
            if answer == "close":
                return
            if answer == "hang":
                self.stopped.wait()
                return
            if answer == "trickle":
                time.sleep(0.35)
                conn.sendall(b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\n")
                for byte in (b"{", b"}"):
                    time.sleep(0.35)
                    conn.sendall(byte)
                return
            status, headers = answer
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: 2\r\nConnection: close\r\n{extra}\r\n{{}}".encode())

    def close(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.sock.close()


def _kube(port: int, threads: int = 4) -> Kube:
    return Kube("east", configuration({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": [{"name": "east", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "op", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "op"}}],
    }), timeout=0.4, threads=threads)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int], Answer]], tuple[Server, Kube]]]:
    made: list[tuple[Server, Kube]] = []

    def start(behave: Callable[[int], Answer], threads: int = 4) -> tuple[Server, Kube]:
        server = Server(behave)
        made.append((server, _kube(server.port, threads)))
        return made[-1]

    yield start
    for server, kube in made:
        kube.close()
        server.close()


RESOURCE = "/api/v1/namespaces/ai/configmaps/x"
OK = (200, {})


def _call(kube: Kube, method: str) -> Any:
    body = None if method in ("GET", "DELETE") else {"data": {}}
    kind = "application/merge-patch+json" if method == "PATCH" else None
    return asyncio.run(kube.request(method, RESOURCE, body=body, content_type=kind))


def test_a_read_whose_connection_broke_is_sent_once_more(serve):
    server, kube = serve(lambda n: "close" if n == 0 else OK)
    assert _call(kube, "GET") == {}
    assert server.requests == [f"GET {RESOURCE} HTTP/1.1"] * 2


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST", "DELETE"])
def test_a_write_whose_connection_broke_is_sent_once(serve, method):
    server, kube = serve(lambda n: "close" if n == 0 else OK)
    with pytest.raises(ClusterUnavailable, match=rf"{method} .*: ProtocolError"):
        _call(kube, method)
    time.sleep(0.3)
    assert len(server.requests) == 1


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_call_given_up_at_its_timeout_is_not_sent_again(serve, method):
    # urllib3's default sent it again after its read timeout, on the thread the caller
    # had left: a PUT twice, a probe's read thread held for more timeouts
    server, kube = serve(lambda n: "hang")
    with pytest.raises(ClusterUnavailable, match=r"no answer within|ReadTimeoutError"):
        _call(kube, method)
    time.sleep(1.5)  # three more read timeouts
    assert len(server.requests) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "POST"])
@pytest.mark.parametrize("status", [429, 503])
def test_a_call_refused_with_retry_after_is_sent_again_after_it(serve, method, status):
    # API Priority and Fairness, or "storage is (re)initializing" while an API server
    # starts: the request was not acted on, so any method is sent again when asked to
    server, kube = serve(lambda n: (status, {"Retry-After": "1"}) if n == 0 else OK)
    kube.timeout = 5.0
    start = time.monotonic()
    assert _call(kube, method) == {}
    assert time.monotonic() - start >= 0.9
    assert len(server.requests) == 2


def test_a_call_refused_again_and_again_is_reported_after_three_resends(serve):
    server, kube = serve(lambda n: (429, {"Retry-After": "1"}))
    kube.timeout = 8.0
    with pytest.raises(ClusterUnavailable, match="HTTP 429"):
        _call(kube, "PUT")
    assert len(server.requests) == 4


def test_a_refusal_without_retry_after_is_reported_at_once(serve):
    server, kube = serve(lambda n: (503, {}))
    with pytest.raises(ClusterUnavailable, match="HTTP 503"):
        _call(kube, "GET")
    assert len(server.requests) == 1


def test_a_refused_connection_is_tried_once_and_logs_nothing(caplog):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed on leaving: nothing listens there
    kube = _kube(port)
    try:
        with (caplog.at_level(logging.DEBUG, logger="urllib3"),
              pytest.raises(ClusterUnavailable, match=r"GET .*: NewConnectionError")):
            _call(kube, "GET")
    finally:
        kube.close()
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


def _patch(kube: Kube) -> Any:
    return kube.request("PATCH", RESOURCE, body={"data": {}},
                        content_type="application/merge-patch+json")


def test_queued_writes_of_an_abandoned_scope_are_never_sent(serve):
    """A fleet round replaced by a newer one (a member went Down) sends none of its writes
    still waiting for a thread; those on a thread finish; writes outside it go on."""
    gate = threading.Event()
    server, kube = serve(lambda n: (gate.wait(5), OK)[1])

    async def go() -> list[Any]:
        scope = WriteScope("round 1")
        token = WRITE_SCOPE.set(scope)
        writes = [asyncio.ensure_future(_patch(kube)) for _ in range(10)]
        WRITE_SCOPE.reset(token)
        for _ in range(200):  # the four write threads are sending theirs
            if len(server.requests) == 4:
                break
            await asyncio.sleep(0.01)
        scope.abandon("east went Down")
        gate.set()
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert scope.dropped == 6
        assert await _patch(kube) == {}  # no scope: sent
        return results

    results = asyncio.run(go())
    assert [r for r in results if not isinstance(r, Exception)] == [{}] * 4
    dropped = [r for r in results if isinstance(r, Exception)]
    assert len(dropped) == 6 and all(isinstance(e, Abandoned) for e in dropped)
    assert "round 1 was replaced (east went Down)" in str(dropped[0])
    assert len(server.requests) == 5


def test_a_write_given_up_keeps_its_thread_until_its_request_ends(serve):
    """A write that timed out still occupies its thread until the request ends; the next
    write waits for the thread in the queue (where its timeout has not started), not in
    the pool behind it with its timeout running."""
    server, kube = serve(lambda n: "trickle" if n == 0 else OK, threads=1)

    async def go() -> Any:
        first = asyncio.ensure_future(_patch(kube))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(_patch(kube))
        with pytest.raises(ClusterUnavailable, match=r"no answer within 0\.4s"):
            await first
        return await second

    assert asyncio.run(go()) == {}
    assert len(server.requests) == 2
