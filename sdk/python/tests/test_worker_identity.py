"""What a worker sends and when it gives up: the protocol version header on every call, and a stop (not endless
retries) when the gateway refuses its token or its protocol."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Setup
from flowork import ApiError, AuthenticationError, Worker


class _Refusing(BaseHTTPRequestHandler):
    """A stand-in gateway that records each request's headers and answers with a fixed refusal."""

    seen: list[dict[str, str]] = []
    answer: tuple[int, str] = (401, "invalid_engine_token")

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        status, code = type(self).answer
        body = json.dumps({"error": code, "message": "refused by the test"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_gateway() -> Iterator[str]:
    _Refusing.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [(401, "invalid_engine_token", AuthenticationError), (400, "unsupported_protocol", ApiError)],
)
def test_a_worker_names_its_protocol_and_stops_on_a_refusal_it_cannot_fix(
    refusing_gateway: str, status: int, code: str, raised: type[ApiError]
) -> None:
    _Refusing.answer = (status, code)
    worker = Worker(refusing_gateway, engine_id="py", token="fwe_wrong", concurrency=1)
    with pytest.raises(raised) as stopped:
        worker.run()
    assert stopped.value.code == code
    assert len(_Refusing.seen) == 1, "a refusal that cannot change must not be retried"
    assert _Refusing.seen[0]["flowork-protocol"] == "1.1"
    assert _Refusing.seen[0]["x-engine-token"] == "fwe_wrong"


def test_the_real_gateway_refuses_a_wrong_token(setup: Setup) -> None:
    worker = Worker(setup.gateway.base, engine_id="py", token="fwe_wrong", concurrency=1)
    with pytest.raises(AuthenticationError):
        worker.run()
    mismatched = Worker(setup.gateway.base, engine_id="other", token=setup.engine_token, concurrency=1)
    with pytest.raises(Exception, match="belongs to engine 'py'"):
        mismatched.run()
