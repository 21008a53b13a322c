"""Test certificates made with the openssl command: a CA, and certificates it
signs for a server on this host (localhost, 127.0.0.1) or for a client."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Pair
    server: Pair
    client: Pair


def make_certs(directory: Path) -> Certs:
    """A CA and two certificates it signed: one for a server on localhost
    and 127.0.0.1, one for a client."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Pair(directory / "ca.pem", directory / "ca-key.pem")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(ca.key), "-out", str(ca.cert), "-days", "2",
        "-subj", "/CN=dpk test CA",
    )  # fmt: skip
    signed = {}
    for name, ext in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        pair = Pair(directory / f"{name}.pem", directory / f"{name}-key.pem")
        csr = directory / f"{name}.csr"
        (directory / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "req", "-new", *_KEY, "-keyout", str(pair.key), "-out", str(csr),
            "-subj", f"/CN=dpk test {name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", "2",
            "-extfile", str(directory / f"{name}.ext"),
        )  # fmt: skip
        signed[name] = pair
    return Certs(ca, signed["server"], signed["client"])
