"""A real nginx (Debian's, run unprivileged with its own prefix) doing ``auth_request`` against
a verifier, in front of a tiny upstream that echoes the headers it received.

The nginx configuration is read from ``docs/verifier.md`` (what users copy), including the part
that maps rate-limit refusals back to 429: nginx's ``auth_request`` passes 401 and 403 through and
turns any other status into a 500, so the verifier is asked (``?rate_limited_status=403``) to
answer them with 403 and ``X-Pmkeys-Reason: rate_limited``, and ``error_page 403`` sorts them.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from pmkeys_dev.processes import ServerProcess, free_port

NGINX = Path("/usr/sbin/nginx")

CONFIG = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    upstream api {{ server 127.0.0.1:{upstream_port}; }}

{documented}
}}
"""

DOCS = Path(__file__).resolve().parents[2] / "docs" / "verifier.md"
#: The verifier's address and the caller token as docs/verifier.md writes them.
DOCUMENTED_VERIFIER = "pmkeys-verifier.pmkeys-system.svc:8080"
DOCUMENTED_TOKEN = "CALLER-TOKEN-FROM-THE-SECRET"


def documented_block(language: str, *, index: int = 0) -> str:
    """The ``index``-th fenced block in ``language`` of docs/verifier.md, as users copy it."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.S)
    return blocks[index]


def documented_nginx(*, verifier_port: int, listen: int, token: str) -> str:
    """The nginx configuration of docs/verifier.md, pointed at local servers."""
    text = documented_block("nginx")
    assert DOCUMENTED_VERIFIER in text and DOCUMENTED_TOKEN in text, "docs/verifier.md changed shape"
    text = text.replace(DOCUMENTED_VERIFIER, f"127.0.0.1:{verifier_port}").replace(DOCUMENTED_TOKEN, token)
    return text.replace("server {\n", f"server {{\n    listen 127.0.0.1:{listen};\n", 1)


class EchoUpstream:
    """The API behind the gateway: answers 200 with the request line and headers as JSON."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen = 0

        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _echo(self) -> None:
                upstream.seen += 1
                body = json.dumps(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _echo

            def log_message(self, *_: object) -> None:  # keep the test output clean
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class NginxGateway:
    def __init__(self, prefix: Path, *, verifier_port: int, upstream_port: int, token: str) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.verifier_port = verifier_port
        self.upstream_port = upstream_port
        self.token = token
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        documented = documented_nginx(verifier_port=self.verifier_port, listen=self.port, token=self.token)
        return CONFIG.format(prefix=self.prefix, upstream_port=self.upstream_port, documented=documented)

    def start(self) -> None:
        for sub in ("logs", "tmp", "conf"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "conf" / "nginx.conf"
        conf.write_text(self.config())
        argv = [str(NGINX), "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "logs" / "error.log")]
        self.process = ServerProcess(f"nginx-{self.port}", argv, log_dir=self.prefix / "logs")
        self.process.start()
        self.process.wait_ready(lambda: httpx.get(self.url + "/", timeout=1).status_code in (401, 403), timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix / "tmp", ignore_errors=True)
