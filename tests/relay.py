"""A TCP relay for tests: connections to one address carried to another, so that a process in a
network namespace a test made reaches a server on this namespace's loopback (the kube-apiserver of
the suite, whose certificate names 127.0.0.1). In-process (`Relay`, a thread) on this side of a
veth pair, and as a program (`python -m tests.relay LISTEN TARGET`) inside the namespace."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


class Relay:
    """Accept on (host, port) and carry each connection to `target`, until `close`."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen)
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._server.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    relay = Relay(_address(sys.argv[1]), _address(sys.argv[2]))
    print("relaying", flush=True)
    threading.Event().wait()
