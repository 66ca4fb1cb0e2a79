"""Throwaway certificates for the TLS tests, made at run time with the openssl command line
tool: a private CA, and server certificates it signs for 127.0.0.1 and localhost."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest


def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(args)} failed:\n{p.stderr}"


class PrivateCa:
    """A CA (`ca.crt`, `ca.key`) in `workdir` that signs server pairs on demand."""

    def __init__(self, workdir: Path):
        if shutil.which("openssl") is None:
            pytest.fail("the openssl command line tool is needed to make test certificates")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
                 "-subj", "/CN=hubcache test CA", cwd=self.dir)
        self._serial = 1000

    def server_pair(self, name: str, days: int = 1) -> tuple[Path, Path]:
        """A new key and a certificate for 127.0.0.1 / localhost signed by this CA."""
        self._serial += 1
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt")
        ext = self.dir / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=self.dir)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(self._serial), "-days", str(days), "-extfile", str(ext),
                 "-out", str(cert), cwd=self.dir)
        return cert, key


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(cert).read_text())


def served_certificate(port: int, ca: Path) -> bytes:
    """The DER certificate a new TLS connection to 127.0.0.1:port is given (verified by `ca`)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)
