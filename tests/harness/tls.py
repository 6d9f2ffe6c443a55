"""Docker engines on TCP with TLS (`dockerd --tlsverify`), as Docker documents it.

Per run, openssl makes a CA, a server certificate per host (CN the host's name; SAN its
name and address; serverAuth) and one client certificate (clientAuth), plus a second,
unrelated CA for tests of a wrong one. A host prepared with `TlsSetup.prepare` listens
on tcp://ADDRESS:2376 besides its unix sockets, and refuses clients without a
certificate from the CA.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.hosts import BOOT_SCRIPT, HostEngine

PORT = 2376
INNER_DIR = Path(BOOT_SCRIPT).parent / "tls"  # the host's view of STATE_DIR/tls
DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    run = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         check=False)
    if run.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {run.stderr.strip()}")


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", DAYS,
             "-subj", f"/CN=walbctr harness {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _signed(d: Path, name: str, cn: str, ext: str, ca: str = "ca") -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
             "-set_serial", f"0x{secrets.token_hex(8)}", "-out", f"{name}-cert.pem", "-days", DAYS,
             "-extfile", f"{name}.ext", cwd=d)


@dataclass
class TlsSetup:
    """The CA, the client's certificate and the hosts' certificates of one run."""

    dir: Path

    @classmethod
    def create(cls) -> TlsSetup:
        setup = cls(Path(tempfile.mkdtemp(prefix="wtls", dir="/tmp")))
        _ca(setup.dir, "ca")
        _ca(setup.dir, "other-ca")
        _signed(setup.dir, "client", "walbctr-controller",
                "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
        _signed(setup.dir, "other-client", "walbctr-stranger",
                "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n", "other-ca")
        return setup

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def other_ca(self) -> Path:
        return self.dir / "other-ca.pem"

    @property
    def cert(self) -> Path:
        return self.dir / "client-cert.pem"

    @property
    def key(self) -> Path:
        return self.dir / "client-key.pem"

    @property
    def other_cert(self) -> Path:
        """A client certificate the hosts refuse: another CA signed it."""
        return self.dir / "other-client-cert.pem"

    @property
    def other_key(self) -> Path:
        return self.dir / "other-client-key.pem"

    def prepare(self, host: HostEngine, state_dir: Path) -> list[str]:
        """start_hosts hook: the host's certificate, and dockerd on tcp with --tlsverify."""
        name = f"server-{host.name}"
        _signed(self.dir, name, host.name,
                f"subjectAltName=DNS:{host.name},IP:{host.address}\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
        d = state_dir / "tls"
        d.mkdir(mode=0o755, exist_ok=True)
        shutil.copy(self.ca, d / "ca.pem")
        shutil.copy(self.dir / f"{name}-cert.pem", d / "cert.pem")
        shutil.copy(self.dir / f"{name}-key.pem", d / "key.pem")
        return ["-H", f"tcp://0.0.0.0:{PORT}", "--tlsverify",
                "--tlscacert", f"{INNER_DIR}/ca.pem", "--tlscert", f"{INNER_DIR}/cert.pem",
                "--tlskey", f"{INNER_DIR}/key.pem"]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_problem() -> str | None:
    """Why the controller cannot run the TLS tests, or None."""
    if shutil.which("openssl") is None:
        return "the `openssl` command is not installed on this machine"
    return None
