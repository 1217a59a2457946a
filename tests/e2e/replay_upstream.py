"""A loopback upstream that replays one recorded provider exchange (a VCR cassette interaction
from `crates/sluice/tests/fixtures/wire/`, see its README) and records what the gateway sent.

The answer goes out with the recorded status, content type and body. Streams keep their
original framing and go out one frame per write, each flushed as its own HTTP chunk, so the
gateway sees real chunking: SSE one event at a time, Bedrock's binary event stream one frame
at a time, NDJSON one line at a time. JSON answers go out whole with a Content-Length.
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

WIRE_DIR = Path(__file__).resolve().parents[2] / "crates" / "sluice" / "tests" / "fixtures" / "wire"


@dataclass
class Interaction:
    """One recorded request and its answer."""

    method: str
    uri: str
    request: Any  # the request body as JSON (or text when it was not JSON)
    status: int
    content_type: str
    response: bytes

    @property
    def path(self) -> str:
        """The recorded URL path, percent-decoded (the gateway and the recorder encode `:` differently)."""
        return unquote(urlsplit(self.uri).path)

    @property
    def is_stream(self) -> bool:
        ct = self.content_type
        return "event-stream" in ct or "eventstream" in ct or "ndjson" in ct or self.uri.endswith("#stream")

    def response_json(self) -> Any:
        return json.loads(self.response)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _header(headers: dict[str, Any] | None, name: str) -> str:
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return _text(v[0] if isinstance(v, list) else v)
    return ""


def load(rel: str) -> list[Interaction]:
    """Every interaction of one cassette (`provider/file.yaml`), in order."""
    doc = yaml.safe_load((WIRE_DIR / rel).read_text())
    out = []
    for it in doc["interactions"]:
        req, resp = it["request"], it["response"]
        if "parsed_body" in req:
            body = req["parsed_body"]
        else:
            raw = _text(req.get("body") or "")
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        if "parsed_body" in resp:
            data = json.dumps(resp["parsed_body"]).encode()
        else:
            b = resp.get("body")
            b = b.get("string", "") if isinstance(b, dict) else (b or "")
            data = b if isinstance(b, bytes) else b.encode()
        out.append(
            Interaction(
                method=req.get("method", "POST"),
                uri=req["uri"],
                request=body,
                status=int(resp["status"]["code"]),
                content_type=_header(resp.get("headers"), "content-type") or "application/json",
                response=data,
            )
        )
    return out


def frames(it: Interaction) -> list[bytes]:
    """The recorded answer cut at its own frame boundaries."""
    data, ct = it.response, it.content_type
    if "eventstream" in ct:
        # AWS event stream: each frame starts with its total length (big-endian u32).
        out, i = [], 0
        while i + 4 <= len(data):
            (n,) = struct.unpack(">I", data[i : i + 4])
            out.append(data[i : i + n])
            i += n
        return out
    if "event-stream" in ct:
        text = data.decode()
        events = [e for e in text.replace("\r\n", "\n").split("\n\n") if e.strip()]
        return [(e + "\n\n").encode() for e in events]
    if "ndjson" in ct:
        return [line + b"\n" for line in data.split(b"\n") if line.strip()]
    return [data]


def eventstream_messages(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Decodes AWS event-stream frames into (string headers, payload) pairs."""
    out, i = [], 0
    while i + 12 <= len(data):
        total, hlen = struct.unpack(">II", data[i : i + 8])
        hdr, j, headers = data[i + 12 : i + 12 + hlen], 0, {}
        while j < len(hdr):
            nlen = hdr[j]
            name = hdr[j + 1 : j + 1 + nlen].decode()
            j += 1 + nlen
            kind = hdr[j]
            j += 1
            if kind == 7:  # string
                (vlen,) = struct.unpack(">H", hdr[j : j + 2])
                headers[name] = hdr[j + 2 : j + 2 + vlen].decode()
                j += 2 + vlen
            else:  # no other header type appears in Converse streams
                break
        out.append((headers, data[i + 12 + hlen : i + total - 4]))
        i += total
    return out


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class ReplayUpstream:
    """Serves queued interactions in order; `seen` holds the requests that reached it."""

    queue: list[Interaction] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                parts = urlsplit(self.path)
                with upstream._lock:
                    upstream.seen.append(
                        Seen(self.command, unquote(parts.path), parts.query, dict(self.headers), body)
                    )
                    it = upstream.queue.pop(0) if upstream.queue else None
                if it is None:
                    upstream.errors.append(f"unexpected request {self.command} {self.path}")
                    self._send(500, "application/json", [b'{"error":"replay upstream: nothing queued"}'], False)
                    return
                self._send(it.status, it.content_type, frames(it), it.is_stream)

            def _send(self, status: int, ct: str, chunks: list[bytes], stream: bool) -> None:
                self.send_response(status)
                self.send_header("content-type", ct)
                if stream:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for c in chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    body = b"".join(chunks)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def arm(self, *interactions: Interaction) -> None:
        with self._lock:
            self.queue = list(interactions)
            self.seen = []
            self.errors = []

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
