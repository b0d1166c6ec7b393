"""A minimal RTSP server on 127.0.0.1 for tests: one clip as L16 (16-bit PCM) RTP over TCP.

ffmpeg cannot serve an RTSP *pull* (``-rtsp_flags listen`` is for its demuxer, which
receives a pushed stream), and Debian 12 ships no RTSP server binary, so the tests
serve the clip with this ~100-line server and read it with the real ffmpeg client
(``NetSource``). It speaks what an RTSP camera speaks: OPTIONS, DESCRIBE (SDP
``L16/16000/1``), SETUP (``RTP/AVP/TCP;interleaved=0-1``), PLAY, TEARDOWN; RTP packets of
20 ms paced to the wall clock. After the clip it closes the connection (as a camera that
goes away); it serves ``connections`` clients, then stops. Everything is bounded by
``deadline_s``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

PACKET_S = 0.02
PT = 96


class RtspServer:
    """Serve ``audio`` (float mono at ``rate``) to ``connections`` RTSP clients in turn."""

    def __init__(self, audio: np.ndarray, rate: int, connections: int = 1, deadline_s: float = 120.0) -> None:
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(">i2")
        self.payload = pcm.tobytes()
        self.rate = rate
        self.connections = connections
        self.deadline = time.monotonic() + deadline_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/clip"
        self.served = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while self.served < self.connections and time.monotonic() < self.deadline:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(max(0.1, self.deadline - time.monotonic()))
                    try:
                        if self._session(conn):
                            self.served += 1
                    except OSError:
                        self.served += 1
        finally:
            self.sock.close()
            self.done.set()

    def _request(self, conn: socket.socket, buf: bytearray) -> tuple[str, dict[str, str]] | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return None
            buf.extend(data)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return lines[0].split(" ")[0], headers

    def _session(self, conn: socket.socket) -> bool:
        buf = bytearray()
        while True:
            req = self._request(conn, buf)
            if req is None:
                return False
            method, h = req
            extra = ""
            body = b""
            if method == "OPTIONS":
                extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
            elif method == "DESCRIBE":
                body = (
                    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=clip\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    f"m=audio 0 RTP/AVP {PT}\r\na=rtpmap:{PT} L16/{self.rate}/1\r\na=control:track0\r\n"
                ).encode()
                extra = f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\n"
            elif method == "SETUP":
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 1234567\r\n"
            elif method in ("PLAY", "TEARDOWN"):
                extra = "Session: 1234567\r\n"
            else:
                conn.sendall(f"RTSP/1.0 501 Not Implemented\r\nCSeq: {h.get('cseq', '0')}\r\n\r\n".encode())
                continue
            if body:
                extra += f"Content-Length: {len(body)}\r\n"
            conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {h.get('cseq', '0')}\r\n{extra}\r\n".encode() + body)
            if method == "PLAY":
                self._stream(conn)
                return True
            if method == "TEARDOWN":
                return True

    def _stream(self, conn: socket.socket) -> None:
        step = round(PACKET_S * self.rate) * 2  # bytes per packet
        t0 = time.monotonic()
        for k, start in enumerate(range(0, len(self.payload), step)):
            chunk = self.payload[start : start + step]
            rtp = struct.pack(">BBHII", 0x80, PT, k & 0xFFFF, (start // 2) & 0xFFFFFFFF, 0x5EDC0DE) + chunk
            conn.sendall(b"$\x00" + struct.pack(">H", len(rtp)) + rtp)
            wait = t0 + (k + 1) * PACKET_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() > self.deadline:
                return

    def close(self) -> None:
        self.deadline = 0.0
        self._thread.join(timeout=2.0)
