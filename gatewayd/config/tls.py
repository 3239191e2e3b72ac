"""A deployment's TLS client settings, and the connection creator they make.

Here rather than in the upstream client because the config loader builds a creator
once per distinct setting to refuse unreadable certificate files before start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from zope.interface import implementer


@dataclass(frozen=True)
class TLSSettings:
    """A deployment's TLS client settings: part of its connection pool's key.

    ``verify`` is True (the system's trust store, ``SSL_CERT_FILE`` honoured), False
    (no verification) or the path of a PEM CA bundle; ``certfile``/``keyfile`` a client
    certificate for mutual TLS."""

    verify: bool | str = True
    certfile: str | None = None
    keyfile: str | None = None


def _trust_root(verify: str) -> Any:
    """The certificates of a PEM bundle as a Twisted trust root."""
    with open(verify, "rb") as f:
        pem = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    certs = [Certificate.loadPEM(marker + part) for part in pem.split(marker)[1:]]
    if not certs:
        raise ValueError(f"{verify}: no PEM certificate in the file")
    return trustRootFromCertificates(certs)


def _client_certificate(settings: TLSSettings) -> PrivateCertificate | None:
    if settings.certfile is None:
        return None
    with open(settings.certfile, "rb") as f:
        cert = f.read()
    key = cert
    if settings.keyfile is not None:
        with open(settings.keyfile, "rb") as f:
            key = f.read()
    client: PrivateCertificate = PrivateCertificate.loadPEM(cert + b"\n" + key)
    return client


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS with no certificate check (``ssl_verify: false``), SNI still sent."""

    def __init__(self, host: bytes, client: PrivateCertificate | None) -> None:
        kw: dict[str, Any] = {}
        if client is not None:
            kw = {"privateKey": client.privateKey.original, "certificate": client.original}
        self._context = CertificateOptions(verify=False, **kw).getContext()
        self._host = host

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._host)
        return connection


def tls_creator(settings: TLSSettings, host: bytes) -> IOpenSSLClientConnectionCreator:
    """The TLS connection creator for one upstream host under ``settings``.

    Raises OSError or ValueError for unreadable files (checked at config load too)."""
    client = _client_certificate(settings)
    if settings.verify is False:
        return _Unverified(host, client)
    root = platformTrust() if settings.verify is True else _trust_root(settings.verify)
    name = host.decode("ascii")
    if client is None:
        return optionsForClientTLS(name, trustRoot=root)
    return optionsForClientTLS(name, trustRoot=root, clientCertificate=client)
