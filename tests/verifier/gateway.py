"""A real nginx (Debian's, run unprivileged with its own prefix) doing ``auth_request`` against
a verifier, in front of a tiny upstream that echoes the headers it received.

The nginx configuration is the one ``docs/verifier.md`` documents, including the variant that
maps rate-limit refusals back to 429: nginx's ``auth_request`` passes 401 and 403 through and
turns any other status into a 500, so the verifier is asked (``?rate_limited_status=403``) to
answer them with 403 and ``X-Pmkeys-Reason: rate_limited``, and ``error_page 403`` sorts them.
"""

from __future__ import annotations

import json
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

    upstream pmkeys_verifier {{ server 127.0.0.1:{verifier_port}; keepalive 16; }}
    upstream api {{ server 127.0.0.1:{upstream_port}; }}

    server {{
        listen 127.0.0.1:{port};

{locations}
    }}
}}
"""

#: The part users copy (docs/verifier.md shows the same text).
LOCATIONS = """\
        # Every request under / is checked by the verifier first.
        location / {
            auth_request /_pmkeys_auth;
            auth_request_set $pmkeys_tenant $upstream_http_x_tenant_id;
            auth_request_set $pmkeys_key_id $upstream_http_x_api_key_id;
            auth_request_set $pmkeys_scopes $upstream_http_x_api_key_scopes;
            auth_request_set $pmkeys_reason $upstream_http_x_pmkeys_reason;
            auth_request_set $pmkeys_retry_after $upstream_http_retry_after;
            auth_request_set $pmkeys_limit_policy $upstream_http_ratelimit_policy;
            auth_request_set $pmkeys_limit $upstream_http_ratelimit;
            error_page 403 = @pmkeys_denied;

            # Identity for the API; a client cannot forge these (proxy_set_header replaces).
            proxy_set_header X-Tenant-Id $pmkeys_tenant;
            proxy_set_header X-Api-Key-Id $pmkeys_key_id;
            proxy_set_header X-Api-Key-Scopes $pmkeys_scopes;
            add_header RateLimit-Policy $pmkeys_limit_policy always;
            add_header RateLimit $pmkeys_limit always;
            proxy_pass http://api;
        }

        location = /_pmkeys_auth {
            internal;
            proxy_pass http://pmkeys_verifier/v1/authz?rate_limited_status=403;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $remote_addr;
        }

        # 403 from the verifier: a missing scope, or a rate-limit refusal sent as 403.
        location @pmkeys_denied {
            default_type application/json;
            if ($pmkeys_reason ~ "^(rate_limited|too_many_failures)$") {
                add_header Retry-After $pmkeys_retry_after always;
                add_header RateLimit-Policy $pmkeys_limit_policy always;
                add_header RateLimit $pmkeys_limit always;
                add_header X-Pmkeys-Reason $pmkeys_reason always;
                return 429 '{"reason":"$pmkeys_reason"}\\n';
            }
            add_header X-Pmkeys-Reason $pmkeys_reason always;
            return 403 '{"reason":"$pmkeys_reason"}\\n';
        }
"""


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
    def __init__(self, prefix: Path, *, verifier_port: int, upstream_port: int) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.verifier_port = verifier_port
        self.upstream_port = upstream_port
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        return CONFIG.format(
            prefix=self.prefix,
            port=self.port,
            verifier_port=self.verifier_port,
            upstream_port=self.upstream_port,
            locations=LOCATIONS,
        )

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
