"""``sparkrec sql-server``: the tables by name for clients outside sparkrec.

One background process runs a Spark session over this config's catalog with Delta enabled, and in
it Spark's Thrift JDBC/ODBC server (the HiveServer2 protocol: beeline, BI tools, any JDBC or ODBC
driver) and a Spark Connect server (``SparkSession.builder.remote("sc://…")``). Every client session
shares the session's catalog, and every query reads each Delta table's latest version, so a nightly
run that writes while the server is up is seen by the next query. With the in-memory catalog the
server registers the tables again every minute (a table first written after it started appears).

Its state is ``sql_server.state_dir``: ``server.json`` (process id, addresses) and ``server.log``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sparkrec.config import Config
from sparkrec.errors import UserError

log = logging.getLogger(__name__)

THRIFT_SERVER = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
CONNECT_PLUGIN = "org.apache.spark.sql.connect.SparkConnectPlugin"
REGISTER_EVERY_S = 60.0
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerState:
    pid: int
    jdbc_url: str
    connect_url: str
    lakehouse: str
    log: str

    def describe(self) -> str:
        return (
            f"sparkrec SQL server (pid {self.pid}) over {self.lakehouse}\n"
            f"  JDBC/ODBC:     {self.jdbc_url}   (.venv/bin/beeline -u {self.jdbc_url})\n"
            f"  Spark Connect: {self.connect_url}\n"
            f"  log:           {self.log}"
        )


def _state_file(config: Config) -> Path:
    return Path(config.sql_server.state_dir) / "server.json"


def read_state(config: Config) -> ServerState | None:
    """The running server of ``config``'s state folder; None when none runs (a stale file is removed)."""
    path = _state_file(config)
    try:
        state = ServerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def start(config: Config, conf_args: list[str]) -> ServerState:
    """Start the server in the background and wait until both ports answer.

    Raises:
        UserError: one runs already, a port is taken, or the server stopped before it answered
            (its log's last lines in the message).
    """
    running = read_state(config)
    if running is not None:
        raise UserError(f"a SQL server runs already (pid {running.pid}, {running.jdbc_url}): sparkrec sql-server stop")
    server = config.sql_server
    for key, port in (("port", server.port), ("connect_port", server.connect_port)):
        if _answers(server.host, port):
            raise UserError(f"port {port} on {server.host} is in use: --set sql_server.{key}=<a free port>")
    state_dir = Path(server.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "server.log"
    command = [sys.executable, "-m", "sparkrec.cli", "sql-server", "serve", *conf_args]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    state = ServerState(
        pid=process.pid,
        jdbc_url=f"jdbc:hive2://{server.host}:{server.port}",
        connect_url=f"sc://{server.host}:{server.connect_port}",
        lakehouse=config.lakehouse.root,
        log=str(log_path),
    )
    _state_file(config).write_text(json.dumps(state.__dict__, indent=2))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (_answers(server.host, server.port) and _answers(server.host, server.connect_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_process(process.pid)
            _state_file(config).unlink(missing_ok=True)
            tail = " | ".join(_log_tail(log_path))
            raise UserError(f"the SQL server did not start (its log {log_path} ends: {tail})")
        time.sleep(1.0)
    return state


def stop(config: Config) -> int | None:
    """Stop the running server; its process id, or None when none ran."""
    state = read_state(config)
    if state is None:
        return None
    _stop_process(state.pid)
    _state_file(config).unlink(missing_ok=True)
    return state.pid


def serve(config: Config) -> None:
    """The server process: the session, the Thrift and Connect servers, until SIGTERM."""
    from sparkrec.session import build_session, register_tables

    server = config.sql_server
    settings = {
        "spark.driver.memory": server.driver_memory,
        "spark.plugins": CONNECT_PLUGIN,
        "spark.connect.grpc.binding.address": server.host,
        "spark.connect.grpc.binding.port": str(server.connect_port),
        "spark.hadoop.hive.server2.thrift.bind.host": server.host,
        "spark.hadoop.hive.server2.thrift.port": str(server.port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
        "spark.ui.showConsoleProgress": "false",
        # The Thrift server's sessions hand dates out as java.time values, which Delta's metadata-only
        # answer to max(ds) (the recommendations_latest view) cannot take: ClassCastException.
        "spark.databricks.delta.optimizeMetadataQuery.enabled": "false",
    }
    spark = build_session(config, server=settings)
    jvm = spark.sparkContext._jvm
    thrift = getattr(jvm, THRIFT_SERVER).startWithContext(spark._jsparkSession.sqlContext())
    log.info("Thrift JDBC/ODBC server on %s:%s, Spark Connect on %s", server.host, server.port, server.connect_port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    while not stopping.wait(REGISTER_EVERY_S):
        if config.catalog.metastore == "in-memory":
            try:
                register_tables(spark, config)  # tables first written after the start
            except Exception:  # noqa: BLE001 - a table mid-write: the next round registers it
                log.warning("registering the tables failed; trying again in %.0f s", REGISTER_EVERY_S, exc_info=True)
    thrift.stop()
    spark.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child not yet reaped still has its pid
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _stop_process(pid: int, timeout_s: float = 60.0) -> None:
    """SIGTERM the server (it stops its servers and Spark), then SIGKILL its process group (the JVM
    too) if it still runs after ``timeout_s``."""
    for kill, sig, wait_s in ((os.kill, signal.SIGTERM, timeout_s), (os.killpg, signal.SIGKILL, 10.0)):
        try:
            kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.5)


def _answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _log_tail(path: Path, lines: int = 3) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    wanted = [line.strip() for line in text if line.strip() and not line.startswith(("\tat ", "    at "))]
    return wanted[-lines:]
