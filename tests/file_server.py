"""A loopback HTTP server that serves files from memory, or fails on purpose, for the download tests.

``server.files`` maps URL paths to bytes; ``server.fail`` maps URL paths to a failure: ``"500"`` answers
HTTP 500, ``"truncate"`` announces the full length and sends half the bytes, then closes. ``server.requests``
lists the paths asked for.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, head: bool) -> None:
        path = self.path.split("?")[0]
        self.server.requests.append((self.command, path))
        failure = self.server.fail.get(path)
        body = self.server.files.get(path)
        if failure == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if failure == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)


def start_file_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.files, server.fail, server.requests = {}, {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
