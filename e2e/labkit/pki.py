"""The lab's certificates, keys and kubeconfigs, made with the openssl CLI.

One CA signs a serving certificate shared by every API server (they all listen
on 127.0.0.1) and an admin client certificate in group system:masters. A
separate RSA key signs service-account tokens. Files are created once and kept
across `up`/`down`, so kubeconfigs stay valid.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import LabError

_DAYS = "3650"
PROMETHEUS_USER = "lab:prometheus"
"""The user the members' Prometheus discovers pods as."""
_SERVING_NAMES = [
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.96.0.1",
]


@dataclass(frozen=True)
class Pki:
    """Paths of the lab's certificates and keys, all under one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def prometheus_cert(self) -> Path:
        """Client certificate of the members' Prometheus: user lab:prometheus, no group
        with rights (members grant it pod discovery only, see members.prometheus_rbac)."""
        return self.dir / "prometheus.crt"

    @property
    def prometheus_key(self) -> Path:
        return self.dir / "prometheus.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "sa.pub"

    def ensure(self) -> None:
        """Create whatever is missing (effects: writes files in `dir`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not self.ca_cert.exists():
            _openssl(
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                _DAYS,
                "-subj",
                "/CN=twinhull-lab-ca",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                str(self.ca_key),
                "-out",
                str(self.ca_cert),
            )
        if not self.serving_cert.exists():
            self._issue(
                self.serving_cert,
                self.serving_key,
                "/CN=kube-apiserver",
                ["extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(_SERVING_NAMES)],
            )
        if not self.admin_cert.exists():
            self._issue(
                self.admin_cert,
                self.admin_key,
                "/O=system:masters/CN=twinhull-lab-admin",
                ["extendedKeyUsage=clientAuth"],
            )
        if not self.prometheus_cert.exists():
            self._issue(
                self.prometheus_cert,
                self.prometheus_key,
                f"/CN={PROMETHEUS_USER}",
                ["extendedKeyUsage=clientAuth"],
            )
        if not self.service_account_pub.exists():
            _openssl(
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(self.service_account_key),
            )
            _openssl(
                "pkey",
                "-in",
                str(self.service_account_key),
                "-pubout",
                "-out",
                str(self.service_account_pub),
            )

    def _issue(self, cert: Path, key: Path, subject: str, extensions: list[str]) -> None:
        """Make a key and a CA-signed certificate for it."""
        csr = cert.with_suffix(".csr")
        ext = cert.with_suffix(".ext")
        ext.write_text(
            "\n".join(
                [
                    "basicConstraints=CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    *extensions,
                ]
            )
            + "\n"
        )
        try:
            _openssl(
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                str(key),
                "-out",
                str(csr),
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(self.ca_cert),
                "-CAkey",
                str(self.ca_key),
                "-set_serial",
                str(secrets.randbits(63)),
                "-days",
                _DAYS,
                "-extfile",
                str(ext),
                "-out",
                str(cert),
            )
        finally:
            csr.unlink(missing_ok=True)
            ext.unlink(missing_ok=True)

    def kubeconfig(self, name: str, server: str, user: str = "admin") -> str:
        """A self-contained kubeconfig (certificates inlined) for the server at `server`, as
        the lab admin (`user` "admin") or as the members' Prometheus ("prometheus")."""
        cert, key = (
            (self.admin_cert, self.admin_key)
            if user == "admin"
            else (self.prometheus_cert, self.prometheus_key)
        )

        def inline(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        return f"""apiVersion: v1
kind: Config
clusters:
- name: twinhull-{name}
  cluster:
    server: {server}
    certificate-authority-data: {inline(self.ca_cert)}
users:
- name: twinhull-{name}-{user}
  user:
    client-certificate-data: {inline(cert)}
    client-key-data: {inline(key)}
contexts:
- name: twinhull-{name}
  context:
    cluster: twinhull-{name}
    user: twinhull-{name}-{user}
current-context: twinhull-{name}
"""


def token_kubeconfig(name: str, server: str, ca: Path, user: str, token: str) -> str:
    """A self-contained kubeconfig authenticating with a bearer token (pure apart from
    reading the CA file)."""
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    return f"""apiVersion: v1
kind: Config
clusters:
- name: twinhull-{name}
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: twinhull-{name}
  context:
    cluster: twinhull-{name}
    user: {user}
current-context: twinhull-{name}
"""


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only, replacing it only if it changed."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def _openssl(*args: str) -> None:
    """Run openssl quietly; raise LabError with its output on failure."""
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {result.stderr.strip()}")
    for path in (Path(a) for a in args if a.endswith(".key")):
        if path.exists():
            os.chmod(path, 0o600)
