"""robots/deadline.py: the request path BridgeClient and PolicyClient share (loopback, fast)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from robots.deadline import DeadlineDealer, DeadlinePassed


@pytest.fixture
def router() -> Iterator[tuple[zmq.Socket, str]]:
    ctx: zmq.Context = zmq.Context.instance()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    port = s.bind_to_random_port("tcp://127.0.0.1")
    yield s, f"tcp://127.0.0.1:{port}"
    s.close(linger=0)


def _decode(parts: list[Any]) -> tuple[int | None, str]:
    text = bytes(parts[0].buffer).decode()
    return int(text.split(":")[0]), text


def _answer(sock: zmq.Socket, *replies: bytes) -> threading.Thread:
    """Answer the next request with `replies`, in order (each a reply message)."""

    def run() -> None:
        if not sock.poll(5000):
            return
        ident, *_ = sock.recv_multipart()
        for r in replies:
            sock.send_multipart([ident, r])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_stale_reply_is_discarded_by_request_id(router: tuple[zmq.Socket, str]) -> None:
    sock, endpoint = router
    d = DeadlineDealer(zmq.Context.instance(), endpoint)
    try:
        t = _answer(sock, b"1:old", b"2:new")
        assert d.request([b"2"], 2, 5.0, _decode) == "2:new"
        t.join()
        assert d.late_replies == 1 and d.timeouts == 0 and d.is_open
    finally:
        d.close()


def test_a_timeout_closes_the_socket_and_the_next_request_opens_a_fresh_one(
        router: tuple[zmq.Socket, str]) -> None:
    sock, endpoint = router
    d = DeadlineDealer(zmq.Context.instance(), endpoint)
    try:
        with pytest.raises(DeadlinePassed, match="within") as ei:
            d.request([b"1"], 1, 0.2, _decode, diagnose=lambda: "handshake failed")
        assert ei.value.detail == "handshake failed" and not d.is_open and d.timeouts == 1
        first_ident = sock.recv_multipart()[0]  # the unanswered request, from the old socket
        t = _answer(sock, b"2:ok")
        assert d.request([b"2"], 2, 5.0, _decode) == "2:ok"
        t.join()
        sock.send_multipart([first_ident, b"1:late"])  # to the closed socket: never seen
        t = _answer(sock, b"3:ok")
        assert d.request([b"3"], 3, 5.0, _decode) == "3:ok" and d.late_replies == 0
        t.join()
    finally:
        d.close()


def test_a_failing_tick_ends_the_wait_at_once_and_closes_the_socket(
        router: tuple[zmq.Socket, str]) -> None:
    _, endpoint = router
    d = DeadlineDealer(zmq.Context.instance(), endpoint)
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        d.request([b"1"], 1, 30.0, _decode, tick=tick, tick_s=0.01)
    assert len(ticks) == 3 and not d.is_open and d.timeouts == 0


def test_configure_and_before_close_run_per_socket(router: tuple[zmq.Socket, str]) -> None:
    _, endpoint = router
    seen: list[str] = []
    d = DeadlineDealer(zmq.Context.instance(), endpoint,
                       configure=lambda s: seen.append("open"),
                       before_close=lambda s: seen.append("close"))
    d.socket()
    d.socket()
    d.close()
    d.close()
    d.socket()
    d.close()
    assert seen == ["open", "close", "open", "close"]
