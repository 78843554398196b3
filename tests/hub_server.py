"""A loopback HTTP server answering the few Hub endpoints that ``create_repo`` and ``upload_folder`` use
(create, validate-yaml for a README.md, preupload, commit).

Files arrive inline (base64) in the commit's NDJSON body because preupload answers ``regular`` for
every file, so no LFS/Xet storage is needed. Received files are kept in ``server.files``.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, payload, status=200):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        self.server.requests.append(("POST", self.path))
        if self.path == "/api/repos/create":
            data = json.loads(raw or b"{}")
            self.server.created.append(data)
            return self._json({"url": f"{self.server.url}/{data.get('organization') or 'user'}/{data['name']}", "name": data["name"]})
        if self.path == "/api/validate-yaml":  # README.md metadata check before the upload
            self.server.validated.append(json.loads(raw)["content"])
            return self._json({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            data = json.loads(raw)
            return self._json(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in data["files"]]}
            )
        if "/commit/" in self.path:
            for line in raw.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("key") == "file":
                    value = item["value"]
                    self.server.files[value["path"]] = base64.b64decode(value["content"])
            repo = self.path.split("/api/models/")[1].split("/commit/")[0]
            return self._json(
                {"commitUrl": f"{self.server.url}/{repo}/commit/abc123", "commitOid": "a" * 40, "pullRequestUrl": None}
            )
        self._json({"error": f"unexpected POST {self.path}"}, status=404)

    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        self._json({"error": f"unexpected GET {self.path}"}, status=404)


def start_hub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.files, server.created, server.requests, server.validated = {}, [], [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def push_folder(folder, repo_id: str = "someone/tiny-lm"):
    """Run ``scripts/push.py folder repo_id`` against a fresh loopback hub server; returns ``(process, server)``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    server = start_hub_server()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=server.url, HF_TOKEN="hf_dummy_token", HF_HUB_DISABLE_TELEMETRY="1")
    script = Path(__file__).resolve().parents[1] / "scripts" / "push.py"
    try:
        proc = subprocess.run([sys.executable, str(script), str(folder), repo_id], env=env, capture_output=True,
                              text=True, timeout=120)
    except BaseException:
        server.shutdown()
        raise
    return proc, server
