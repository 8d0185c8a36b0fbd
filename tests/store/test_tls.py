"""`rediss://`: the store's own connections (app/store/wire.py) speak TLS as redis-py would from the same URL, to a
real redis-server with a TLS port, and refuse a server whose certificate the URL's CA did not sign (fail closed)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.errors import StoreUnavailable
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.processes import free_port, wait_until
from tests.store.conftest import budget, decision, tid


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _authority(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_cert(directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(TLS port, certificate dir) of a redis-server that speaks only TLS, its certificate signed by `ca.crt`."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key, ca = _authority(directory, "ca")
    _authority(directory, "other")  # a CA that signed nothing of this server's
    _server_cert(directory, ca_key, ca)
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(directory / "server.crt")]
    tls += ["--tls-key-file", str(directory / "server.key"), "--tls-ca-cert-file", str(directory / "ca.crt")]
    process = subprocess.Popen(
        ["redis-server", "--port", "0", *tls, "--tls-auth-clients", "no", "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None, what="TLS redis")
        yield port, directory
    finally:
        process.kill()
        process.wait()


async def test_a_rediss_store_decides_over_tls(tls_redis: tuple[int, Path]) -> None:
    port, directory = tls_redis
    store = RedisStore(
        NodeRunner(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={directory / 'ca.crt'}&ssl_cert_reqs=required")
    )
    root = tid()
    try:
        outcomes = [await store.decide(decision(root, 1, budgets=(budget("b", 2),))) for _ in range(3)]
        assert [o.status for o in outcomes] == ["allowed", "allowed", "budget_exceeded"]
        assert await store.ready() is None
    finally:
        await store.close()


async def test_a_server_certificate_the_url_does_not_trust_is_unavailable(tls_redis: tuple[int, Path]) -> None:
    port, directory = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={directory / 'other.crt'}&ssl_cert_reqs=required"
    store = RedisStore(NodeRunner(url, timeout=1.0))
    try:
        with pytest.raises(StoreUnavailable):
            await store.decide(decision(tid(), 1, budgets=(budget("b", 2),)))
    finally:
        await store.close()


async def test_plain_redis_to_a_tls_port_is_unavailable(tls_redis: tuple[int, Path]) -> None:
    store = RedisStore(NodeRunner(f"redis://127.0.0.1:{tls_redis[0]}/0", timeout=0.5))
    try:
        with pytest.raises(StoreUnavailable):
            await store.decide(decision(tid(), 1, budgets=(budget("b", 2),)))
    finally:
        await store.close()
