"""A tiny Hugging Face Hub on 127.0.0.1 for download tests: the real huggingface_hub client talks
to it over HTTP (repo info, file tree, resolve), so the download path runs for real offline."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(
        self, repos: dict[tuple[str, str], dict[str, bytes]], gated: set[str] = frozenset()
    ):
        self.repos = repos  # (repo_type, repo_id) -> {path: bytes}
        self.gated = set(gated)
        self.requests: list[str] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _find(self, parts: list[str]):
        """Split a URL path into (repo_type, repo_id, rest) for a known repo."""
        kind = "model"
        if parts and parts[0] in ("datasets", "spaces", "models"):
            kind, parts = parts[0][:-1], parts[1:]
        if len(parts) >= 2 and (kind, f"{parts[0]}/{parts[1]}") in self.repos:
            return kind, f"{parts[0]}/{parts[1]}", parts[2:]
        return None

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, code, value, head=False):
                self._send(
                    code, json.dumps(value).encode(), {"Content-Type": "application/json"}, head
                )

            def _route(self, head=False):
                hub.requests.append(f"{self.command} {self.path}")
                path = unquote(urlparse(self.path).path).strip("/").split("/")
                api = path[0] == "api"
                found = hub._find(path[1:] if api else path)
                if found is None:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                kind, repo, rest = found
                if repo in hub.gated:
                    return self._send(
                        403,
                        b"gated",
                        {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"},
                        head,
                    )
                files = hub.repos[(kind, repo)]
                if api and (not rest or rest[0] == "revision"):
                    return self._json(
                        200,
                        {
                            "id": repo,
                            "sha": COMMIT,
                            "private": False,
                            "siblings": [{"rfilename": f} for f in files],
                        },
                        head,
                    )
                if api and rest[:1] == ["tree"]:
                    entries = [
                        {
                            "type": "file",
                            "path": f,
                            "size": len(b),
                            "oid": hashlib.sha1(b).hexdigest(),
                        }
                        for f, b in files.items()
                    ]
                    return self._json(200, entries, head)
                if not api and rest[:1] == ["resolve"] and len(rest) >= 3:
                    name = "/".join(rest[2:])
                    if name not in files:
                        return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                    body = files[name]
                    etag = f'"{hashlib.sha256(body).hexdigest()}"'
                    return self._send(
                        200,
                        body,
                        {
                            "ETag": etag,
                            "X-Repo-Commit": COMMIT,
                            "Content-Type": "application/octet-stream",
                        },
                        head,
                    )
                return self._send(404, b"", {}, head)

            def do_GET(self):
                self._route()

            def do_HEAD(self):
                self._route(head=True)

        return Handler
