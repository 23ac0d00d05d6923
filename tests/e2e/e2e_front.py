"""A front proxy that behaves like Cloud Run's for the container behind it.

- requests reach the container with the service's `*.run.app` Host and `X-Forwarded-Proto: https`;
- like Google's front end, it keeps a client's own `X-Forwarded-For` and appends the client's
  address ("<client's header>, <client address>",
  https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header), so a client can
  write anything on the left of that header; a client on this machine is given a public
  documentation address (203.0.113.7), as every client of a Cloud Run service reaches Google's
  front end from outside; the container's peer is this proxy (127.0.0.1), never the client;
- a request body over 32 MiB is refused with 413 (Cloud Run's HTTP/1 limit), before it is read;
- the largest request body and response body seen are recorded.

It also serves as the HTTP proxy of the test browser: a CONNECT to the service host on 443 is
answered by this proxy itself, which terminates TLS with a self-signed certificate for that host
(as Google's front end terminates it with a real one), so the browser uses the real https URL.
Anything else (another host, plain-http absolute URLs) is refused: the browser reaches nothing but
this proxy.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socketserver
import ssl
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CLOUD_RUN_MAX_REQUEST_BYTES = 32 * 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}
COPY_CHUNK = 1024 * 1024
# Google's front end never sees a loopback client: stand-in for a client on the internet (RFC 5737).
MODELLED_CLIENT_ADDRESS = "203.0.113.7"


class FrontStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.max_request_body = 0
        self.max_response_body = 0
        self.requests = 0
        self.refused = 0

    def record(self, request_body: int, response_body: int) -> None:
        with self.lock:
            self.requests += 1
            self.max_request_body = max(self.max_request_body, request_body)
            self.max_response_body = max(self.max_response_body, response_body)

    def reset(self) -> None:
        with self.lock:
            self.max_request_body = self.max_response_body = self.requests = self.refused = 0


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    front: CloudRunFront

    def do_CONNECT(self):
        if self.path != f"{self.front.service_host}:443":
            return self.refuse(HTTPStatus.FORBIDDEN, b"This test proxy only reaches the MLflow service.")
        self.send_response(HTTPStatus.OK, "Connection established")
        self.end_headers()
        self.connection = self.front.tls_context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = socketserver._SocketWriter(self.connection)
        self.close_connection = False
        return None

    def do_GET(self):
        self.forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def refuse(self, status: int, body: bytes = b"") -> None:
        with self.front.stats.lock:
            self.front.stats.refused += 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def target_path(self) -> str | None:
        """The origin-form path; None for an absolute-form (proxy) request, which is refused."""
        return self.path if self.path.startswith("/") else None

    def forwarded_headers(self) -> dict[str, str]:
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in HOP_BY_HOP and name.lower() not in ("host", "x-forwarded-for")}
        headers.update({"Host": self.front.service_host, "X-Forwarded-Proto": "https",
                        "X-Forwarded-For": self.forwarded_for(), "Connection": "close"})
        return headers

    def forwarded_for(self) -> str:
        """The client's X-Forwarded-For, kept, with the client's address appended (Cloud Run / GFE)."""
        client = self.client_address[0]
        if ipaddress.ip_address(client).is_loopback:
            client = MODELLED_CLIENT_ADDRESS
        sent = ", ".join(self.headers.get_all("X-Forwarded-For") or [])
        return f"{sent}, {client}" if sent else client

    def read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        if length > CLOUD_RUN_MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(length)

    def read_chunked_body(self) -> bytes | None:
        chunks, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            total += size
            if total > CLOUD_RUN_MAX_REQUEST_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def forward(self) -> None:
        path = self.target_path()
        if path is None:
            return self.refuse(HTTPStatus.FORBIDDEN, b"This test proxy only reaches the MLflow service.")
        body = self.read_body()
        if body is None:
            return self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"Request body over 32 MiB.")
        connection = http.client.HTTPConnection("127.0.0.1", self.front.backend_port, timeout=300)
        try:
            connection.request(self.command, path, body=body or None, headers=self.forwarded_headers())
            response = connection.getresponse()
            sent = self.relay(response)
        except OSError:
            return self.refuse(HTTPStatus.BAD_GATEWAY)
        finally:
            connection.close()
        self.front.stats.record(len(body), sent)

    def relay(self, response: http.client.HTTPResponse) -> int:
        has_body = self.command != "HEAD" and response.status not in (204, 304)
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and (name.lower() != "content-length" or not has_body):
                self.send_header(name, value)
        if has_body:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if not has_body:
            return 0
        sent = 0
        while chunk := response.read(COPY_CHUNK):
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        self.wfile.write(b"0\r\n\r\n")
        return sent

    def log_message(self, format, *args):
        pass


def self_signed_tls_context(host: str) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
        with open(cert_path, "wb") as file:
            file.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as file:
            file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    return context


class CloudRunFront:
    def __init__(self, service_url: str, backend_port: int):
        self.service_url = service_url.rstrip("/")
        self.service_host = urlsplit(service_url).hostname
        self.backend_port = backend_port
        self.stats = FrontStats()
        self.tls_context = self_signed_tls_context(self.service_host)
        handler = type("BoundFrontHandler", (FrontHandler,), {"front": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CloudRunFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
