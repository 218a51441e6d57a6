"""The Client and the Worker against a gateway serving HTTPS with a certificate from a private CA (made for the
test): trusted with ``ca_file``, refused without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Setup, make_test_ca, running_gateway
from flowork import Client


def test_the_client_and_a_worker_trust_a_private_ca_with_ca_file(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    ca_file = make_test_ca(tls)
    flags = ["--tls-cert", str(tls / "tls-cert.pem"), "--tls-key", str(tls / "tls-key.pem")]
    with running_gateway(tmp_path, flags, ca_file=ca_file) as gateway:
        assert gateway.base.startswith("https://")
        engine_token = gateway.add_engine("py")
        user_token = gateway.mint("alice")
        client = Client(gateway.base, token=user_token, retry_deadline=20.0, ca_file=str(ca_file))
        setup = Setup(gateway, engine_token, user_token, client, tmp_path)
        try:
            worker = setup.start_worker(ca_file=ca_file)
            job = client.enqueue("py", "upper", {"text": "over tls"})
            done = client.wait(job["id"], timeout=30)
            assert done["status"] == "succeeded", (done, worker.log_text())
            assert done["result"]["text"] == "OVER TLS"
        finally:
            client.close()
            for w in setup.workers:
                w.process.kill()
                w.process.wait()

        # Without the CA, the gateway's certificate is not trusted: the call fails instead of going out in clear.
        untrusting = Client(gateway.base, token=user_token, retry_deadline=0.0)
        try:
            with pytest.raises(Exception, match="(?i)certificate"):
                untrusting.get(job["id"])
        finally:
            untrusting.close()
