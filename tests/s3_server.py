"""A real S3-compatible server on loopback for the tests: moto's ``moto_server`` (from PyPI, in the
dev extra), started as its own process. Test infrastructure, not product.

The tests reach it through AWS's standard variables (components/object_store.py), as a pod
reaches SeaweedFS or MinIO. ``FaultyLink`` sits between a client and the server to cut the
connection after a given number of requests, as a store that stops mid-push does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ACCESS_KEY, SECRET_KEY = "vae-mnist-test", "vae-mnist-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``refuse_all``: the server checks credentials and knows none (moto's
    INITIAL_NO_AUTH_ACTION_COUNT=0), as a store does for a wrong key."""

    def __init__(self, refuse_all: bool = False):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
        env = os.environ | ({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if refuse_all else {})
        self._process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}")
                time.sleep(0.2)

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What a pod or a user sets to reach this store."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)


class FaultyLink:
    """A TCP relay to the server that forwards whole HTTP requests and, once ``allowed`` requests
    with ``marker`` in their head have passed (a server-side copy: ``x-amz-copy-source``), closes
    every connection and refuses new ones at the next: the store is gone mid-work."""

    def __init__(self, target_port: int, allowed: int, marker: bytes = b"x-amz-copy-source"):
        self.target_port, self.allowed, self.marker, self.counted = target_port, allowed, marker.lower(), 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Forwards one request at a time (head, then Content-Length bytes of body), counting."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                with self._lock:
                    if self._cut:
                        return
                    if self.marker in head.lower():
                        if self.counted >= self.allowed:
                            self._cut_locked()
                            return
                        self.counted += 1
                server.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def _cut_locked(self) -> None:
        self._cut = True
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        with self._lock:
            self._cut_locked()
        self._listener.close()
