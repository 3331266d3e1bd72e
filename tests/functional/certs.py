"""A throwaway certificate authority made with the `openssl` CLI, as an operator would.

`make_pki(directory)` writes a CA, a server certificate for localhost/127.0.0.1/::1 signed by
it, a second unrelated key (for mismatch tests) and an encrypted key. EC P-256 keys: fast to
generate, so each test session pays a few tens of milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

OPENSSL = shutil.which("openssl")

_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class Pki(NamedTuple):
    ca: Path
    cert: Path
    key: Path
    other_key: Path  # not the key of `cert`
    encrypted_key: Path  # `key`, encrypted with a passphrase
    directory: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key(path: Path, cwd: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(path), cwd=cwd)  # fmt: skip


def issue(directory: Path, name: str, ca: Path, ca_key: Path, days: int = 2) -> tuple[Path, Path]:
    """A server certificate and key named `name`, signed by the CA (a renewal makes another)."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / "server.ext"
    ext.write_text(_SERVER_EXTENSIONS)
    _key(key, directory)
    _run("req", "-new", "-key", str(key), "-subj", f"/CN=localhost/O={name}", "-out", str(csr),
         cwd=directory)  # fmt: skip
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", str(days), "-extfile", str(ext), "-out", str(cert),
         cwd=directory)  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    _key(ca_key, directory)
    _run("req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=forklift test CA",
         "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(ca),
         cwd=directory)  # fmt: skip
    cert, key = issue(directory, "server", ca, ca_key)
    other = directory / "other.key"
    _key(other, directory)
    encrypted = directory / "encrypted.key"
    _run("pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted),
         cwd=directory)  # fmt: skip
    return Pki(ca, cert, key, other, encrypted, directory)


_shared: list = []


def shared_pki(tmp_path_factory) -> Pki:
    """One CA and server certificate per test session (each module's `pki` fixture calls it)."""
    # Tests that use it are marked @pytest.mark.requires("openssl"): skipped before we get here.
    assert OPENSSL is not None, 'mark the test @pytest.mark.requires("openssl")'
    if not _shared:
        _shared.append(make_pki(Path(tmp_path_factory.mktemp("pki"))))
    return _shared[0]
