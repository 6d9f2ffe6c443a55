"""The keeper's HTTP endpoint: /metrics on the address the layout chose, with optional TLS
and basic auth read from a Prometheus web configuration file, the format exporters read
through exporter-toolkit (https://prometheus.io/docs/prometheus/latest/configuration/https/).

prometheus-client serves plain HTTP only in Debian 12's 0.16, so the server is the stdlib's
wsgiref, with TLS wrapped around each accepted connection in that connection's thread.
The parser is pure; `load` and `serve` are the I/O beside it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# exporter-toolkit's client_auth_type values Python's ssl can honour: it cannot ask for a
# certificate without verifying it, so RequestClientCert and RequireAnyClientCert are refused.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
REQUEST_TIMEOUT_S = 10  # a scrape that takes longer is a client holding a thread
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    users: Mapping[str, str] = field(default_factory=dict)  # user -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def parse(data: object, base_dir: str) -> WebConfig:
    """A web configuration from its parsed YAML; ValueError names the key that is wrong.
    Relative file names are taken from `base_dir`, the file's own directory, as
    exporter-toolkit does."""
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise ValueError("the web config is not a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} (the keeper reads "
                         "tls_server_config and basic_auth_users)")
    tls = data.get("tls_server_config") or {}
    users = data.get("basic_auth_users") or {}
    if not isinstance(tls, dict) or not isinstance(users, dict):
        raise ValueError("tls_server_config and basic_auth_users are mappings")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(f"basic_auth_users.{user} is not a bcrypt hash (make one with "
                             "htpasswd -nBC 10 USER)")
    return _with_tls(WebConfig(users={str(u): str(h) for u, h in users.items()}), tls,
                     base_dir)


def _with_tls(web: WebConfig, tls: dict[str, Any], base_dir: str) -> WebConfig:
    if not tls:
        return web
    if set(tls) - _TLS_KEYS:
        raise ValueError(f"tls_server_config.{sorted(set(tls) - _TLS_KEYS)[0]} is not a key "
                         f"the keeper reads ({', '.join(sorted(_TLS_KEYS))})")
    cert, key, ca = (_file(tls, k, base_dir) for k in ("cert_file", "key_file",
                                                        "client_ca_file"))
    if cert is None or key is None:
        raise ValueError("tls_server_config needs both cert_file and key_file")
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in CLIENT_AUTH:
        raise ValueError(f"tls_server_config.client_auth_type {auth_type!r} is not one of "
                         f"{', '.join(CLIENT_AUTH)}")
    if CLIENT_AUTH[auth_type] is not ssl.CERT_NONE and ca is None:
        raise ValueError(f"client_auth_type {auth_type} needs tls_server_config.client_ca_file")
    version = tls.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise ValueError(f"tls_server_config.min_version {version!r} is not TLS12 or TLS13")
    return WebConfig(cert, key, ca, CLIENT_AUTH[auth_type], TLS_VERSIONS[version], web.users)


def _file(tls: dict[str, Any], key: str, base_dir: str) -> str | None:
    value = tls.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"tls_server_config.{key} is not a file name")
    return value if value.startswith("/") else os.path.join(base_dir, value)


def load(path: str) -> WebConfig:
    import yaml  # noqa: PLC0415 (only a keeper with a web config needs it)

    with open(path, encoding="utf-8") as f:
        return parse(yaml.safe_load(f), os.path.dirname(path))


def ssl_context(web: WebConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = web.min_version
    assert web.cert_file is not None
    ctx.load_cert_chain(web.cert_file, web.key_file)
    ctx.verify_mode = web.client_auth
    if web.client_ca_file is not None:
        ctx.load_verify_locations(cafile=web.client_ca_file)
    return ctx


class BasicAuth:
    """A WSGI app that lets through only the web config's users. bcrypt is slow by design
    (tens of ms), so a password already checked is remembered by an HMAC of it, as
    exporter-toolkit caches its bcrypt results."""

    def __init__(self, app: WSGIApp, users: Mapping[str, str],
                 check: Callable[[bytes, bytes], bool] | None = None) -> None:
        self.app = app
        self.users = users
        self.check = check or _bcrypt_check
        self._key = os.urandom(32)
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def allowed(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        token = hmac.new(self._key, f"{user}\0{password}\0{hashed}".encode(),
                         hashlib.sha256).digest()
        with self._lock:
            if token in self._good:
                return True
        if not self.check(password.encode(), hashed.encode()):
            return False
        with self._lock:
            self._good.add(token)
        return True

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        if self.allowed(environ.get("HTTP_AUTHORIZATION")):
            return self.app(environ, start)
        start("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="walb-keeper"'),
                                   ("Content-Type", "text/plain")])
        return [b"Unauthorized\n"]


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # noqa: PLC0415 (only a keeper with basic_auth_users needs it)

    return bool(bcrypt.checkpw(password, hashed))


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per connection; the TLS handshake happens in that thread, so a client
    that connects and says nothing holds up only itself (and for REQUEST_TIMEOUT_S)."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(REQUEST_TIMEOUT_S)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that fails its handshake or goes away is its own problem: one line,
        not a traceback in the keeper's log."""
        import sys  # noqa: PLC0415

        err = sys.exc_info()[1]
        print(f"walb-keeper: /metrics: {client_address[0]}: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the keeper's own log."""


HEALTH_PATH = "/-/healthy"  # as Prometheus names its own


def with_health(app: WSGIApp) -> WSGIApp:
    """`app`, and HEALTH_PATH answering 200 at once: the container's health check asks it
    every 10 s, and a /metrics page of 600 volume rows costs more to make than to fetch."""
    def routed(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            start("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        return app(environ, start)
    return routed


def serve(app: WSGIApp, address: str, port: int, web: WebConfig | None = None) -> _Server:
    """Serve `app` (and HEALTH_PATH) on address:port in a daemon thread; TLS and basic auth
    as `web` says."""
    app = with_health(app)
    if web is not None and web.users:
        app = BasicAuth(app, web.users)
    httpd = make_server(address, port, app, _Server, handler_class=_QuietHandler)
    if web is not None and web.tls:
        httpd.tls = ssl_context(web)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return httpd
