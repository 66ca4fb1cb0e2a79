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


    def expired_pair(self, name: str) -> tuple[Path, Path]:
        """A pair whose certificate was valid only on 2020-01-01 (`openssl ca` sets past dates)."""
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=self.dir)
        db = self.dir / f"{name}-db"
        db.mkdir()
        (db / "index.txt").write_text("")
        (db / "serial.txt").write_text("2001\n")
        (db / "ca.cnf").write_text(
            "[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = index.txt\n"
            "new_certs_dir = .\ndefault_md = sha256\npolicy = policy_any\nserial = serial.txt\n"
            "x509_extensions = server\n[policy_any]\ncommonName = supplied\n"
            "[server]\nsubjectAltName = IP:127.0.0.1,DNS:localhost\nbasicConstraints = CA:FALSE\n"
            "extendedKeyUsage = serverAuth\n")
        _openssl("ca", "-batch", "-config", "ca.cnf", "-in", str(csr), "-out", str(cert),
                 "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                 "-keyfile", str(self.key), "-cert", str(self.cert), "-notext", cwd=db)
        return cert, key


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(cert).read_text())


def served_certificate(port: int, ca: Path) -> bytes:
    """The DER certificate a new TLS connection to 127.0.0.1:port is given (verified by `ca`)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)
