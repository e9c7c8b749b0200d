"""A Kubernetes API server for tests: list and watch of Namespaces, Services, EndpointSlices and
Pods over HTTP, the way kube-apiserver serves them, driven by the test.

What it speaks: list responses with `metadata.resourceVersion` and `limit`/`continue` paging;
`?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=T` answered with a chunked
stream of JSON lines (ADDED, MODIFIED, DELETED, BOOKMARK), an ERROR event with a 410 Status when
asked for a version older than the retained history, and the stream closed after timeoutSeconds.
A single resourceVersion counter spans every kind, as etcd's does. `labelSelector` is honoured
for equality (`a=b`, `a!=b`) and existence (`a`, `!a`) terms.

Like kube-apiserver, it answers 401 to a request without the bearer token (`TOKEN`), and it can
serve HTTPS with a certificate made by `make_tls_files`, as a pod's in-cluster configuration
expects.

What a test can do: add, modify and delete objects; drop every open connection; stop the server
(connections refused) and start it again on the same port; answer 500; stall (accept and never
answer); compact history; forbid a kind (403); count requests.
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

Obj = dict[str, Any]

# (API path prefix, plural) -> kind
_KINDS = {
    ("/api/v1", "namespaces"): "Namespace",
    ("/api/v1", "services"): "Service",
    ("/api/v1", "pods"): "Pod",
    ("/apis/discovery.k8s.io/v1", "endpointslices"): "EndpointSlice",
}
_API_VERSION = {"Namespace": "v1", "Service": "v1", "Pod": "v1", "EndpointSlice": "discovery.k8s.io/v1"}
BOOKMARK_INTERVAL = 0.5  # seconds of quiet before a watch gets a BOOKMARK
TOKEN = "test-token"  # the bearer token every request must carry


def make_tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = directory / "api.crt", directory / "api.key"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    names = ["-subj", "/CN=kdns-test-apiserver", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*command.split(), "-keyout", str(key), "-out", str(cert), *names], check=True, capture_output=True)
    return cert, key


class FakeApiServer:
    """The server and its state; every method is safe to call from the test's thread."""

    def __init__(self, tls: tuple[Path, Path] | None = None, anonymous: bool = False) -> None:
        """`tls`: (certificate, key) to serve HTTPS; plain HTTP without. `anonymous`: requests
        without the token are answered too (as `kubectl proxy` answers them)."""
        self.tls = tls
        self.anonymous = anonymous
        self.unauthorized = 0  # requests answered 401
        self.forbidden: set[str] = set()  # kinds answered 403, as for an account without RBAC for them
        self._lock = threading.Condition()
        self._version = 100
        self._objects: dict[tuple[str, str, str], Obj] = {}  # (kind, namespace, name) -> object
        # (version, event type, object, the object before the change or None)
        self._history: list[tuple[int, str, Obj, Obj | None]] = []
        self._oldest = self._version  # versions older than this are compacted away
        self._failing = False
        self._fail_lists_only = False
        self._stalled = False
        self._generation = 0  # bumped to end every open watch and stalled request
        self._cut_next = False
        self.requests: list[str] = []
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self.start()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on the same port."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.api = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            # The handshake happens on the first read, in the request's own thread.
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._httpd = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and drop every connection: clients get connection refused."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.drop_connections()

    def inject(self, kind: str, line: bytes) -> None:
        """Send `line` as it is to every watch of `kind`, in order with the other events: an event
        of an unknown type, an object of a foreign kind, a malformed object."""
        with self._lock:
            self._version += 1
            self._history.append((self._version, "RAW", {"kind": kind, "line": line}, None))
            self._lock.notify_all()

    def cut_next_event(self) -> None:
        """Write only the first half of the next watch event, then cut the connection (a reset
        mid-stream): the client sees truncated JSON, and on watching again, the whole event."""
        with self._lock:
            self._cut_next = True

    def take_cut(self) -> bool:
        with self._lock:
            cut, self._cut_next = self._cut_next, False
            return cut

    def drop_connections(self) -> None:
        with self._lock:
            self._generation += 1
            self._lock.notify_all()

    def fail(self, failing: bool = True, lists_only: bool = False) -> None:
        """Answer every request (or only lists) with 500 while `failing`."""
        with self._lock:
            self._failing = failing
            self._fail_lists_only = lists_only
        if failing and not lists_only:
            self.drop_connections()

    def stall(self, stalled: bool = True) -> None:
        """Accept requests and never answer them while `stalled`."""
        with self._lock:
            self._stalled = stalled
            self._lock.notify_all()
        if stalled:
            self.drop_connections()

    def compact(self) -> None:
        """Forget history: a watch from any version before now gets 410 Gone.

        Open watches are ended too. A real API server keeps delivering to them from its watch
        cache; this one has no other copy of the history, and an open watch that woke after the
        history was cleared would otherwise send a BOOKMARK past events it never delivered."""
        with self._lock:
            self._version += 1
            self._oldest = self._version
            self._history.clear()
            self._generation += 1
            self._lock.notify_all()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": self._cluster()}],
                    "users": [{"name": "test", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                    "current-context": "test",
                }
            )
        )
        return path

    def _cluster(self) -> Obj:
        if self.tls is None:
            return {"server": f"http://127.0.0.1:{self.port}"}
        return {"server": f"https://127.0.0.1:{self.port}", "certificate-authority": str(self.tls[0])}

    # -- objects ---------------------------------------------------------------------------

    def apply(self, obj: Obj) -> Obj:
        """Create or replace an object (ADDED or MODIFIED)."""
        obj = copy.deepcopy(obj)
        kind = obj["kind"]
        obj.setdefault("apiVersion", _API_VERSION[kind])
        key = (kind, obj["metadata"].get("namespace", "") if kind != "Namespace" else "", obj["metadata"]["name"])
        with self._lock:
            previous = self._objects.get(key)
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._objects[key] = obj
            self._history.append((self._version, "ADDED" if previous is None else "MODIFIED", obj, previous))
            self._lock.notify_all()
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace if kind != "Namespace" else "", name)
        with self._lock:
            obj = copy.deepcopy(self._objects.pop(key))
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._history.append((self._version, "DELETED", obj, None))
            self._lock.notify_all()

    def watch_count(self) -> int:
        return sum(1 for request in self.requests if "watch=true" in request)

    # -- serving (called from handler threads) ---------------------------------------------

    def _matching(self, kind: str, namespace: str | None, selector: str, obj: Obj) -> bool:
        if obj["kind"] != kind:
            return False
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return False
        return _selects(selector, obj["metadata"].get("labels") or {})

    def list(self, kind: str, namespace: str | None, selector: str, limit: int, token: str) -> tuple[int, Obj]:
        with self._lock:
            if token:
                version, offset = (int(part) for part in token.split(":"))
                if version < self._oldest:
                    return 410, _status(410, "Expired", "The provided continue parameter is too old")
            else:
                version, offset = self._version, 0
            snapshot = sorted(
                (obj for key, obj in self._objects.items() if self._matching(kind, namespace, selector, obj)),
                key=lambda obj: (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]),
            )
        page = snapshot[offset : offset + limit] if limit else snapshot[offset:]
        metadata: Obj = {"resourceVersion": str(version)}
        if limit and offset + limit < len(snapshot):
            metadata["continue"] = f"{version}:{offset + limit}"
        items = []
        for obj in page:
            item = copy.deepcopy(obj)
            del item["kind"], item["apiVersion"]  # list items carry no kind, as the API sends them
            items.append(item)
        return 200, {"kind": f"{kind}List", "apiVersion": _API_VERSION[kind], "metadata": metadata, "items": items}

    def events(
        self, kind: str, namespace: str | None, selector: str, since: int, timeout: float, bookmarks: bool
    ) -> Iterator[Obj | bytes]:
        """Watch events after `since` until `timeout` passes or the connection is dropped (raw
        lines from `inject` as bytes)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            generation = self._generation
            if since < self._oldest:
                yield {"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {since}")}
                return
        last_sent = since
        while True:
            with self._lock:
                pending = [entry for entry in self._history if entry[0] > last_sent]
                if not pending:
                    self._lock.wait(min(BOOKMARK_INTERVAL, max(0.0, deadline - time.monotonic())))
                    pending = [entry for entry in self._history if entry[0] > last_sent]
                if self._generation != generation:
                    return
                current = self._version
            for version, event_type, obj, previous in pending:
                last_sent = version
                if event_type == "RAW":
                    if obj["kind"] == kind:
                        yield obj["line"]
                    continue
                event = _as_seen(
                    event_type,
                    self._matching(kind, namespace, selector, obj),
                    previous is not None and self._matching(kind, namespace, selector, previous),
                )
                if event is not None:
                    yield {"type": event, "object": obj}
            if not pending and bookmarks:
                last_sent = max(last_sent, current)
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": kind,
                        "apiVersion": _API_VERSION[kind],
                        "metadata": {"resourceVersion": str(current)},
                    },
                }
            if time.monotonic() >= deadline:
                return

    def gate(self, watch: bool) -> int | None:
        """Wait while stalled; then the status to fail with (500), or None to serve."""
        with self._lock:
            generation = self._generation
            while self._stalled:
                self._lock.wait(0.1)
                if self._generation != generation and not self._stalled:
                    break
            if self._failing and not (watch and self._fail_lists_only):
                return 500
            return None


def _as_seen(event_type: str, matches: bool, matched_before: bool) -> str | None:
    """The event a watch with a selector sees: as kube-apiserver's watch cache does, an object that
    stops matching is DELETED for it, and one that starts matching is ADDED."""
    if event_type != "MODIFIED":
        return event_type if matches else None
    if matches:
        return "MODIFIED" if matched_before else "ADDED"
    return "DELETED" if matched_before else None


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: FakeApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api = self.server.api
        url = urlparse(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        api.requests.append(self.path)
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if (scheme.lower() != "bearer" or token != TOKEN) and not (api.anonymous and not scheme):
            with api._lock:
                api.unauthorized += 1
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        status = api.gate(watch=query.get("watch") in ("true", "1"))
        if status is not None:
            self._json(status, _status(status, "InternalError", "the test made the server fail"))
            return
        route = _route(url.path)
        if route is None:
            self._json(404, _status(404, "NotFound", f"no route {url.path}"))
            return
        kind, namespace = route
        if kind in api.forbidden:
            self._json(403, _status(403, "Forbidden", f"cannot list resource of kind {kind}"))
            return
        selector = query.get("labelSelector", "")
        if query.get("watch") in ("true", "1"):
            self._watch(api, kind, namespace, selector, query)
        else:
            code, body = api.list(kind, namespace, selector, int(query.get("limit", 0)), query.get("continue", ""))
            self._json(code, body)

    def _json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(
        self, api: FakeApiServer, kind: str, namespace: str | None, selector: str, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds", 1800))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in api.events(kind, namespace, selector, since, timeout, bookmarks):
                line = event if isinstance(event, bytes) else json.dumps(event).encode() + b"\n"
                if not isinstance(event, bytes) and event["type"] != "BOOKMARK" and api.take_cut():
                    half = line[: len(line) // 2]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
                    self.wfile.flush()
                    return  # the connection is cut mid-event (closed in `finally`)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def _route(path: str) -> tuple[str, str | None] | None:
    """(kind, namespace or None) of a list or watch path."""
    for (prefix, plural), kind in _KINDS.items():
        if path == f"{prefix}/{plural}":
            return kind, None
        if kind != "Namespace" and path.startswith(f"{prefix}/namespaces/") and path.endswith(f"/{plural}"):
            middle = path[len(f"{prefix}/namespaces/") : -len(f"/{plural}")]
            if middle and "/" not in middle:
                return kind, middle
    return None
