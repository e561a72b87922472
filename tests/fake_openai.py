"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies and fault injection.

``script(body) -> Reply`` decides each answer from the request JSON; every request is recorded.
``POST .../images/generations`` is answered by ``image_script(body) -> ImageReply`` (a PIL-drawn PNG
of the requested size by default) and recorded in ``image_requests``, apart from chat requests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@dataclass
class Reply:
    content: str | None = "### Feedback\nFine.\n### Score\n4"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # drop the connection without answering
    message: str = ""
    prompt_tokens: int = 100
    completion_tokens: int = 20
    choices: list[Any] | None = None  # sent verbatim instead of one choice with `content`


@dataclass
class ImageReply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    message: str = ""
    data: bytes | None = None  # the image bytes to send; None draws a PNG of the requested size


def drawn_png(body: dict[str, Any]) -> bytes:
    """A PNG of ``body["size"]`` (``WxH``; 64x64 by default) whose colour depends on the prompt."""
    try:
        w, h = (int(x) for x in str(body.get("size") or "64x64").lower().split("x"))
    except ValueError:
        w, h = 64, 64
    color = tuple(hashlib.sha256(str(body.get("prompt", "")).encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets connections under load
    daemon_threads = True


class FakeOpenAI:
    def __init__(
        self,
        script: Callable[[dict[str, Any]], Reply] | None = None,
        latency: float = 0.0,
        image_script: Callable[[dict[str, Any]], ImageReply] | None = None,
    ) -> None:
        self.script = script or (lambda body: Reply())
        self.image_script = image_script or (lambda body: ImageReply())
        self.latency = latency
        self.requests: list[dict[str, Any]] = []
        self.image_requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

            def log_message(self, *args):
                pass

            def do_GET(self):
                body = json.dumps({"object": "list", "data": [{"id": "judge", "object": "model"}]})
                self._send(200, body.encode(), {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/").endswith("/images/generations"):
                    return self._images(body)
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = server.script(body)
                time.sleep(server.latency + reply.delay)
                if reply.reset:
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.status != 200:
                    payload = json.dumps(
                        {
                            "error": {
                                "message": reply.message or f"scripted {reply.status}",
                                "type": "test",
                            }
                        }
                    ).encode()
                    return self._send(reply.status, payload, reply.headers)
                payload = json.dumps(
                    {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "judge"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply.content},
                            }
                        ]
                        if reply.choices is None
                        else reply.choices,
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    }
                ).encode()
                self._send(200, payload, reply.headers)

            def _images(self, body):
                with server._lock:
                    server.image_requests.append(body)
                reply = server.image_script(body)
                time.sleep(server.latency + reply.delay)
                if reply.status != 200:
                    err = {"message": reply.message or f"scripted {reply.status}", "type": "test"}
                    payload = json.dumps({"error": err}).encode()
                    return self._send(reply.status, payload, reply.headers)
                data = reply.data if reply.data is not None else drawn_png(body)
                image = {"b64_json": base64.b64encode(data).decode("ascii")}
                payload = json.dumps({"created": 0, "data": [image]}).encode()
                self._send(200, payload, reply.headers)

            def _send(self, status, payload, headers):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def user_text(body: dict[str, Any]) -> str:
    """The user message's text parts joined, with ``<image>`` where each image part sits."""
    user = next(m for m in body["messages"] if m["role"] == "user")
    return "".join(p["text"] if p["type"] == "text" else "<image>" for p in user["content"])


def image_urls(body: dict[str, Any]) -> list[str]:
    user = next(m for m in body["messages"] if m["role"] == "user")
    return [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
