"""A real ``mlflow server`` for the tests (127.0.0.1, SQLite store), and queries of the runs
dfmx records in a tracking store."""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from cli_runner import BIN


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store under ``root``; yields its
    URI and terminates it afterwards."""
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT,
        # Without MLflow's job runner: its seven worker processes import MLflow while the
        # server starts (healthy after 17-24 s on 2 cores, against 9-12 s without them).
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    SERVERS[uri] = proc
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not become healthy in 120 s")
            time.sleep(0.5)
        yield uri
    finally:
        stop_server(uri)
        log.close()


#: The processes of the servers :func:`mlflow_server` started, by URI.
SERVERS: dict[str, subprocess.Popen] = {}


def stop_server(uri: str) -> None:
    """Stop the server :func:`mlflow_server` started at ``uri`` (idempotent)."""
    proc = SERVERS.pop(uri, None)
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_runs(client: object, parent_run_id: str) -> list:
    """The child runs of a parent run."""
    parent = client.get_run(parent_run_id)  # type: ignore[attr-defined]
    return client.search_runs(  # type: ignore[attr-defined]
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=1000,
    )


def parent_runs(client: object, experiment_name: str = "dfmx") -> list:
    """The sweep parent runs of an experiment."""
    exp = client.get_experiment_by_name(experiment_name)  # type: ignore[attr-defined]
    assert exp is not None, f"no experiment {experiment_name!r}"
    return client.search_runs(  # type: ignore[attr-defined]
        [exp.experiment_id], filter_string="tags.`dfmx.sweep` = 'parent'"
    )


class _AuthProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to :attr:`upstream` when it carries :attr:`auth` (HTTP basic
    authentication); answers 401 otherwise. Records what it saw in :attr:`seen`."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    auth = ""
    seen: ClassVar[list[tuple[str, str, bool]]] = []
    _HOP: ClassVar[frozenset[str]] = frozenset({
        "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate"})

    def _forward(self) -> None:
        allowed = self.headers.get("Authorization") == self.auth
        self.seen.append((self.command, self.path, allowed))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if not allowed:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self._HOP}
        connection.request(self.command, self.path, body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in self._HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def basic_auth_proxy(upstream_uri: str, user: str, password: str
                     ) -> Iterator[tuple[str, list[tuple[str, str, bool]]]]:
    """A server on 127.0.0.1 in front of the server at ``upstream_uri`` (``http://HOST:
    PORT``) that lets through only requests carrying ``user:password`` as HTTP basic
    authentication, as a server behind an authenticating proxy does. Yields its
    ``HOST:PORT`` and the list of ``(method, path, allowed)`` of the requests it got."""
    parts = urllib.parse.urlsplit(upstream_uri)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    seen: list[tuple[str, str, bool]] = []
    handler = type("Proxy", (_AuthProxy,), {
        "upstream": (parts.hostname, parts.port), "auth": f"Basic {token}", "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
