"""uvicorn serving the web app: in a thread of ``myonode serve``, or in the foreground (``myonode web``)."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from starlette.applications import Starlette

from node.settings import WebSettings

log = logging.getLogger(__name__)


def config(app: Starlette, web: WebSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=web.bind_host, port=web.port, root_path=web.root_path,
        ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
        ssl_keyfile=str(web.tls_key) if web.tls_key else None,
        proxy_headers=bool(web.forwarded_allow_ips), forwarded_allow_ips=web.forwarded_allow_ips or None,
        log_level="warning", access_log=False, server_header=False, lifespan="off",
    )


class WebServer(threading.Thread):
    """uvicorn in a background thread; :meth:`stop` ends it (uvicorn installs no signal handlers off the main thread)."""

    def __init__(self, app: Starlette, web: WebSettings) -> None:
        super().__init__(name="myonode-web", daemon=True)
        self.server = uvicorn.Server(config(app, web))
        self.web = web

    def start_and_wait(self, timeout_s: float = 30.0) -> WebServer:
        self.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.is_alive():
                raise RuntimeError(f"the web console could not listen on {self.web.bind_host}:{self.web.port} "
                                   "([web] bind_host / port; see the log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web console did not start within {timeout_s:.0f} s")
            time.sleep(0.02)
        scheme = "https" if self.web.tls_cert else "http"
        log.info("web console on %s://%s:%d%s/", scheme, self.web.bind_host, self.port, self.web.root_path)
        return self

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.web.port

    def run(self) -> None:
        self.server.run()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self.is_alive():
            self.join(timeout=timeout_s)
