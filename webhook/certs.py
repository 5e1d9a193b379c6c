"""The webhook's certificates: a self-signed CA (its certificate is the caBundle) and a serving certificate
it signs, kept in one directory as ca.crt, ca.key, tls.crt, tls.key (the names cert-manager writes).

`ensure_certificates(directory, ...)` makes what is missing and replaces what is about to expire: the
serving certificate `renew_before` ahead of its end (or when its names changed), the CA likewise (a new
CA also means a new serving certificate, and the registration's caBundle must follow: `CertState.ca_pem`).
Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"


@dataclass(frozen=True)
class CertState:
    ca_pem: bytes  # the caBundle
    ca_rotated: bool  # a new CA was made this call
    serving_rotated: bool  # a new serving certificate was written this call
    serving_not_after: dt.datetime


def ensure_certificates(
    directory: Path,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    now: dt.datetime,
    serving_days: int = 90,
    ca_days: int = 3650,
    renew_before: dt.timedelta = dt.timedelta(days=30),
) -> CertState:
    """Make or renew the CA and serving certificate in `directory` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_rotated = False
    ca = _load(directory / CA_CERT, directory / CA_KEY)
    ca_renew = min(renew_before * 4, dt.timedelta(days=ca_days) / 2)
    if ca is None or ca[0].not_valid_after_utc - ca_renew <= now:
        ca = _new_ca(now, ca_days)
        _write(directory / CA_KEY, _key_pem(ca[1]))
        _write(directory / CA_CERT, ca[0].public_bytes(serialization.Encoding.PEM))
        ca_rotated = True
    ca_cert, ca_key = ca
    serving = _load(directory / TLS_CERT, directory / TLS_KEY)
    wanted = _names(dns_names, ip_addresses)
    if (
        ca_rotated
        or serving is None
        or serving[0].not_valid_after_utc - renew_before <= now
        or serving[0].issuer != ca_cert.subject
        or _san_of(serving[0]) != wanted
    ):
        serving = _new_serving(ca_cert, ca_key, wanted, now, serving_days)
        _write(directory / TLS_KEY, _key_pem(serving[1]))
        _write(directory / TLS_CERT, serving[0].public_bytes(serialization.Encoding.PEM))
        serving_rotated = True
    else:
        serving_rotated = False
    return CertState(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        ca_rotated=ca_rotated,
        serving_rotated=serving_rotated,
        serving_not_after=serving[0].not_valid_after_utc,
    )


def serving_not_after(directory: Path) -> dt.datetime | None:
    loaded = _load(directory / TLS_CERT, directory / TLS_KEY)
    return loaded[0].not_valid_after_utc if loaded is not None else None


# --- Pieces -------------------------------------------------------------------------------------------


def _names(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> frozenset[str]:
    return frozenset(
        [f"DNS:{n}" for n in dns_names] + [f"IP:{ipaddress.ip_address(a)}" for a in ip_addresses]
    )


def _san_of(cert: x509.Certificate) -> frozenset[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(
        [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        + [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    )


def _load(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return cert, key


def _new_ca(now: dt.datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"slurm-bridge-webhook-ca-{int(now.timestamp())}")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_serving(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: frozenset[str],
    now: dt.datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    general: list[x509.GeneralName] = []
    for name in sorted(names):
        kind, _, value = name.partition(":")
        general.append(x509.DNSName(value) if kind == "DNS" else x509.IPAddress(ipaddress.ip_address(value)))
    dns = [n.partition(":")[2] for n in sorted(names) if n.startswith("DNS:")]
    common_name = dns[0] if dns else "slurm-bridge-webhook"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)
