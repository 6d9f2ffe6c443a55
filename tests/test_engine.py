from walbctr.docker.engine import Engine
from walbctr.layout.host import TlsSpec


def test_local_engine_needs_no_flags() -> None:
    assert Engine().cli_flags() == []
    assert Engine().client_options() == {}


def test_context_and_ssh() -> None:
    assert Engine("prod-a0").cli_flags() == ["--context", "prod-a0"]
    assert Engine("ssh://root@hostA0").client_options() == {"host": "ssh://root@hostA0"}


def test_tls_engine_passes_its_certificates() -> None:
    tls = TlsSpec(ca="/c/ca.pem", cert="/c/cert.pem", key="/c/key.pem")
    engine = Engine("tcp://hostA0:2376", "hostA0", tls)
    assert engine.cli_flags() == ["--host", "tcp://hostA0:2376", "--tlscacert", "/c/ca.pem",
                                  "--tlscert", "/c/cert.pem", "--tlskey", "/c/key.pem",
                                  "--tlsverify"]
    assert engine.client_options()["tlsverify"] is True


def test_unreachable_names_the_host_and_the_fix() -> None:
    err = Engine("tcp://127.0.0.1:1", "hostP0").unreachable(OSError("connection refused"))
    assert "host hostP0: cannot reach its Docker engine at tcp://127.0.0.1:1" in err.message
    assert "hosts.hostP0.engine" in err.fix
