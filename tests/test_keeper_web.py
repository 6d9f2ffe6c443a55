"""The keeper's /metrics endpoint with a Prometheus web config: parsed as exporter-toolkit
reads it, then served for real (TLS from openssl-made certificates, bcrypt passwords) and
fetched over the loopback, in-process."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from walbctr.keeper import web


def fetch(url: str, cafile: Path, user: str, password: str | None) -> tuple[int, bytes]:
    """GET `url` over TLS trusting `cafile`, as `user` with `password` (None: no
    Authorization header); the HTTP status and body, errors included."""
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=5) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _app(environ: dict[str, Any], start: Any) -> list[bytes]:
    start("200 OK", [("Content-Type", "text/plain")])
    return [b"walb_server_up 1\n"]


@pytest.mark.parametrize(("data", "words"), [
    ({"tls_server_config": {"cert_file": "c.pem"}}, "needs both cert_file and key_file"),
    ({"tls_server_config": {"cert_file": "c", "key_file": "k",
                            "client_auth_type": "RequireAnyClientCert"}}, "is not one of"),
    ({"tls_server_config": {"cert_file": "c", "key_file": "k",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "needs tls_server_config.client_ca_file"),
    ({"basic_auth_users": {"prom": "secret"}}, "basic_auth_users.prom is not a bcrypt hash"),
    ({"http_server_config": {}}, "unknown key 'http_server_config'"),
    ({"tls_server_config": {"cert_file": "c", "key_file": "k", "cipher_suites": []}},
     "tls_server_config.cipher_suites is not a key"),
])
def test_a_bad_web_config_is_refused_naming_the_key(data: object, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        web.parse(data, "/etc/kw")


def test_relative_file_names_are_read_beside_the_web_config() -> None:
    parsed = web.parse({"tls_server_config": {"cert_file": "c.pem", "key_file": "/k/k.pem"}},
                       "/etc/walb-keeper/web")
    assert (parsed.cert_file, parsed.key_file) == ("/etc/walb-keeper/web/c.pem", "/k/k.pem")
    assert parsed.tls and parsed.client_auth is ssl.CERT_NONE


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed here: it makes the test's certificates")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    return tmp_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_are_served_over_tls_only_to_a_user_with_the_password(tls_files: Path) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tls_files / "web.yml").write_text(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    port = _free_port()
    server = web.serve(_app, "127.0.0.1", port, web.load(str(tls_files / "web.yml")))
    try:
        url = f"https://127.0.0.1:{port}/metrics"

        def get(password: str | None) -> int:
            status, body = fetch(url, tls_files / "cert.pem", "prometheus", password)
            assert status != 200 or b"walb_server_up 1" in body
            return status

        assert get("s3cret") == 200
        assert get("s3cret") == 200  # the second time from the cache
        assert get("wrong") == 401
        assert get(None) == 401
        with pytest.raises(OSError):  # plain HTTP gets no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        silent = socket.create_connection(("127.0.0.1", port))  # connects, never says hello
        try:
            assert get("s3cret") == 200  # others are still served meanwhile
        finally:
            silent.close()
    finally:
        server.shutdown()
        server.server_close()
