"""A stand-in for Azure OpenAI on loopback, for record-mode tests: it checks `api-key`, sends
Azure-like headers, and answers chat (plain and streamed with pauses between chunks),
embeddings, audio transcriptions, dall-e-3 image generations and Responses. It counts the
connections it accepted and what it served, so tests can prove a replay (or a request the
simulator failed on) never reached it.

It can also misbehave for chosen deployments (`faults`): never answer, break a stream off
with a reset, or answer a server error as a gateway's HTML page or as Azure's JSON; and it
can serve HTTPS with a given certificate (`self_signed` makes one)."""

from __future__ import annotations

import base64
import datetime
import gzip
import io
import ipaddress
import json
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

UPSTREAM_KEY = "azure-secret-key-9f8e7d"
CHUNK_GAP = 0.05


# What the fake Azure answers for files and batches (record mode forwards them).
UPSTREAM_FILE = {
    "id": "file-upstream0001",
    "object": "file",
    "bytes": 10,
    "created_at": 1700000000,
    "filename": "in.jsonl",
    "purpose": "batch",
    "status": "processed",
    "expires_at": None,
}
UPSTREAM_BATCH = {
    "id": "batch_upstream0001",
    "object": "batch",
    "endpoint": "/chat/completions",
    "input_file_id": "file-upstream0001",
    "completion_window": "24h",
    "output_file_id": "file-upstream-out",
    "created_at": 1700000000,
}
UPSTREAM_RESULTS = b'{"custom_id":"task-0","response":{"status_code":200,"body":{"upstream":true}},"error":null}\n'


def chat_body(content: str, model: str = "gpt-4o-2024-11-20") -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:20],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }


def image_body(response_format: str) -> dict:
    """A dall-e-3 answer: a 16x16 PNG as base64, or Azure's blob URL for one."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 200)).save(out, format="PNG")
    item = {"revised_prompt": "Upstream drew it."}
    if response_format == "b64_json":
        item["b64_json"] = base64.b64encode(out.getvalue()).decode()
    else:
        item["url"] = "https://dalleprodsec.blob.core.windows.net/private/images/x/generated_00.png?se=2099-01-01"
    return {"created": int(time.time()), "data": [item]}


# What `faults` can make it do for a deployment.
HANG = "hang"  # read the request, then never answer
CUT_STREAM = "cut-stream"  # start a stream, send a few events, then reset the connection
HTML_503 = "html-503"  # a gateway's 503 page
JSON_500 = "json-500"  # Azure's own 500
AZURE_500 = {
    "error": {
        "code": "InternalServerError",
        "message": "The server had an error while processing your request. Sorry about that!",
    }
}


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (no CA vouches for it): cert and key files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake azure")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fake-azure-cert.pem", folder / "fake-azure-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeAzure(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the concurrency tests open hundreds of connections at once

    def __init__(self, bearer: str | None = None, port: int = 0, tls: tuple[Path, Path] | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.bearer = bearer  # an Entra ID token it accepts in place of the key
        self.faults: dict[str, str] = {}  # deployment name -> how to misbehave for it
        self.compress = False  # gzip answers for clients that accept it
        self.released = threading.Event()  # set when it stops: a hanging answer gives up
        self.tls = tls is not None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.requests: list[dict] = []
        self.connections = 0  # every connection accepted, whether or not a request came on it
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1
        return True

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeAzure:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAzure

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        if self.server.compress and "gzip" in self.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(body)))
        self.send_header("apim-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-region", "Sweden Central")
        self.send_header("set-cookie", "session=upstream-cookie")
        self.send_header("x-ratelimit-remaining-tokens", "999")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        raw = self.rfile.read(length)
        upload = "multipart/form-data" in self.headers.get("content-type", "")
        body = {"upload_bytes": len(raw)} if upload else json.loads(raw or b"{}")
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        deployment = re.search(r"/deployments/([^/]+)/", self.path)
        fault = self.server.faults.get(deployment.group(1) if deployment else "")
        if fault is not None:
            self._misbehave(fault)
            return
        entra_ok = (
            self.server.bearer is not None and self.headers.get("authorization") == f"Bearer {self.server.bearer}"
        )
        if self.headers.get("api-key") != UPSTREAM_KEY and not entra_ok:
            self._send(401, b'{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}')
            return
        if "/audio/transcriptions" in self.path:
            self._send(200, json.dumps({"text": f"Upstream heard {len(raw)} bytes."}).encode())
            return
        path = self.path.partition("?")[0].rstrip("/")
        if path.endswith("/files"):
            self._send(200, json.dumps(UPSTREAM_FILE).encode())
            return
        if path.endswith("/batches"):
            self._send(200, json.dumps({**UPSTREAM_BATCH, "status": "validating"}).encode())
            return
        if "/images/generations" in self.path:
            self._send(200, json.dumps(image_body(body.get("response_format") or "url")).encode())
            return
        if "/embeddings" in self.path:
            data = [
                {"object": "embedding", "index": i, "embedding": [0.6, 0.8]}
                for i, _ in enumerate(body["input"] if isinstance(body["input"], list) else [body["input"]])
            ]
            out = {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": data,
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
            self._send(200, json.dumps(out).encode())
            return
        if self.path.partition("?")[0].rstrip("/").endswith("/responses"):
            self._responses(body)
            return
        text = "Upstream says: " + str(body.get("messages", [{}])[-1].get("content"))
        if body.get("stream"):
            self._stream(text)
            return
        time.sleep(0.2)
        self._send(200, json.dumps(chat_body(text)).encode())

    def do_GET(self) -> None:
        """Files and batches: a batch is in progress when first asked, completed after."""
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
        path = self.path.partition("?")[0].rstrip("/")
        if path.endswith("/content"):
            self._send(200, UPSTREAM_RESULTS, "application/octet-stream")
        elif "/batches/" in path:
            polls = sum(1 for r in self.server.requests if "/batches/" in r["path"] and r["body"] is None)
            status = "in_progress" if polls == 1 else "completed"
            self._send(200, json.dumps({**UPSTREAM_BATCH, "status": status}).encode())
        else:
            self._send(404, b'{"error":{"code":"404","message":"Resource not found"}}')

    def _misbehave(self, fault: str) -> None:
        if fault == HANG:
            self.server.released.wait(60)
            self.close_connection = True
        elif fault == HTML_503:
            self._send(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
        elif fault == JSON_500:
            self._send(500, json.dumps(AZURE_500).encode())
        elif fault == CUT_STREAM:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for word in ("Half", " an"):
                frame = {
                    "id": "chatcmpl-cut",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4o",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                self._chunk(b"data: " + json.dumps(frame).encode() + b"\n\n")
                time.sleep(CHUNK_GAP)
            # A reset, not a clean close: linger 0 makes close() send RST.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _stream(self, text: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("apim-request-id", str(uuid.uuid4()))
        self.end_headers()
        frames = [{"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}]
        words = text.split(" ")
        for i, word in enumerate(words):
            frames.append(
                {
                    "id": "chatcmpl-x",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4o",
                    "choices": [
                        {"index": 0, "delta": {"content": word if i == 0 else " " + word}, "finish_reason": None}
                    ],
                }
            )
        frames.append(
            {
                "id": "chatcmpl-x",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        for frame in frames:
            self._chunk(b"data: " + json.dumps(frame).encode() + b"\n\n")
            time.sleep(CHUNK_GAP)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _responses(self, body: dict) -> None:
        """The Responses API: a response object, or its events with `event:` lines and no [DONE]."""
        text = "Upstream responds: " + str(body.get("input"))
        words = text.split(" ")
        message = {
            "id": "msg_up",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        response = {
            "id": "resp_up" + uuid.uuid4().hex[:12],
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": "gpt-4o-2024-11-20",
            "output": [message],
            "usage": {
                "input_tokens": 5,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(words),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 5 + len(words),
            },
        }
        if not body.get("stream"):
            self._send(200, json.dumps(response).encode())
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        opened = {**response, "status": "in_progress", "output": [], "usage": None}
        ref = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
        events = [
            {"type": "response.created", "response": opened},
            {"type": "response.in_progress", "response": opened},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**message, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **ref, "part": {**message["content"][0], "text": ""}},
        ]
        events += [
            {"type": "response.output_text.delta", **ref, "delta": w if i == 0 else " " + w}
            for i, w in enumerate(words)
        ]
        events += [
            {"type": "response.output_text.done", **ref, "text": text},
            {"type": "response.content_part.done", **ref, "part": message["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": response},
        ]
        for n, event in enumerate(events):
            event["sequence_number"] = n
            self._chunk(b"event: " + event["type"].encode() + b"\ndata: " + json.dumps(event).encode() + b"\n\n")
            time.sleep(CHUNK_GAP)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
