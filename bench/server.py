"""The fake OpenAI-compatible server: blocking sockets, one thread per connection, pre-built bytes.

It runs in its own process (``python -m bench.server``), so its CPU never counts against a client.
Each streamed event is one ``sendall`` (TCP_NODELAY) framed as one HTTP chunk, as a real server's
token-by-token output is. Keep-alive is honoured; nothing is parsed beyond what routing needs.

Two ports: the data port serves ``POST .../chat/completions`` and counts every accepted connection
(so new TCP connections per request can be measured); the control port answers ``GET /stats``
(``accepts``, ``requests``, the server's own CPU seconds, streams open now and at most) and
``GET /reset`` (restarts the "open at most" count). It prints ``PORT CONTROL_PORT`` on stdout once
it listens.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from .payload import LATE_END_SECONDS, completion, parse_model, sse_events

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nx-request-id: req_bench\r\n\r\n"
)
CHUNK_END = b"0\r\n\r\n"


BURST_EVENTS = 64  # events per socket write in the "burst" scenario


def _frame(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


class FakeServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepts = 0
        self.requests = 0
        self.open_streams = 0
        self.max_open_streams = 0
        self._streams: dict[int, list[bytes]] = {}
        self._json: dict[int, bytes] = {}

    # ----------------------------------------------------------- pre-built bytes

    def stream_writes(self, count: int) -> list[bytes]:
        writes = self._streams.get(count)
        if writes is None:
            writes = self._streams[count] = [_frame(event) for event in sse_events(count)]
        return writes

    def json_response(self, count: int) -> bytes:
        response = self._json.get(count)
        if response is None:
            body = completion(count)
            response = self._json[count] = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req_bench\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        return response

    # ------------------------------------------------------------------ serving

    def serve(self, listener: socket.socket, handler, counted: bool) -> None:
        while True:
            conn, _ = listener.accept()
            if counted:
                with self.lock:
                    self.accepts += 1
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def _requests(self, conn: socket.socket):
        """Yield ``(method, target, body, close)`` for each request on a keep-alive connection."""
        buf = b""
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf[:end], buf[end + 4 :]
            request_line, *header_lines = head.split(b"\r\n")
            method, target, _ = request_line.split(b" ", 2)
            length = 0
            close = False
            for line in header_lines:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
                elif name == b"transfer-encoding":
                    raise ValueError("chunked request bodies are not supported by the bench server")
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            yield method, target, body, close
            if close:
                return

    def handle_data(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for method, target, body, _close in self._requests(conn):
                with self.lock:
                    self.requests += 1
                if method != b"POST" or not target.split(b"?")[0].endswith(b"/chat/completions"):
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                request = json.loads(body)
                kind, count, interval = parse_model(request["model"])
                if not request.get("stream"):
                    conn.sendall(self.json_response(count))
                    continue
                self.stream(conn, kind, self.stream_writes(count), interval)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stream(self, conn: socket.socket, kind: str, writes: list[bytes], interval: float) -> None:
        send = conn.sendall
        send(STREAM_HEAD)
        with self.lock:
            self.open_streams += 1
            self.max_open_streams = max(self.max_open_streams, self.open_streams)
        try:
            if kind == "drip":
                send(writes[0] + writes[1])  # the role chunk and the first text at once
                for write in writes[2:-3]:
                    time.sleep(interval)
                    send(write)
                for write in writes[-3:]:
                    send(write)
            elif kind == "burst":  # many SSE events per socket write: a fast server, or a burst after a stall
                for start in range(0, len(writes), BURST_EVENTS):
                    send(b"".join(writes[start : start + BURST_EVENTS]))
            else:
                for write in writes:
                    send(write)
            if kind == "late":
                time.sleep(LATE_END_SECONDS)
            send(CHUNK_END)
        finally:
            with self.lock:
                self.open_streams -= 1

    def handle_control(self, conn: socket.socket) -> None:
        try:
            for _method, target, _body, _close in self._requests(conn):
                if target.startswith(b"/reset"):
                    with self.lock:
                        self.max_open_streams = self.open_streams
                with self.lock:
                    stats = {
                        "accepts": self.accepts,
                        "requests": self.requests,
                        "cpu": time.process_time(),
                        "open_streams": self.open_streams,
                        "max_open_streams": self.max_open_streams,
                    }
                body = json.dumps(stats).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
                return
        except OSError:
            pass
        finally:
            conn.close()


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    return listener


def _exit_at_eof() -> None:
    """The parent holds our stdin open: when it goes away (even killed), so do we."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--prebuild", type=int, nargs="*", default=[], help="stream sizes to build at start")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    threading.stack_size(512 * 1024)
    server = FakeServer()
    for count in args.prebuild:
        server.stream_writes(count)
        server.json_response(count)
    data, control = _listen(args.port), _listen(args.control_port)
    threading.Thread(target=server.serve, args=(control, server.handle_control, False), daemon=True).start()
    sys.stdout.write(f"{data.getsockname()[1]} {control.getsockname()[1]}\n")
    sys.stdout.flush()
    if args.exit_with_stdin:
        threading.Thread(target=_exit_at_eof, daemon=True).start()
    try:
        server.serve(data, server.handle_data, True)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
