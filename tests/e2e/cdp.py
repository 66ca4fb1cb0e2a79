"""A headless Chromium driven over the DevTools protocol, with the standard library only (a
minimal WebSocket client): start it, open a page, evaluate JavaScript, take a screenshot.

    with Browser(tmp_path) as browser:
        browser.navigate(url)
        browser.wait_for("document.body.dataset.polls > 0", timeout=10)
        png = browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import helpers

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-extensions", "--no-default-browser-check", "--window-size=1280,1400"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, masking, fragmentation."""

    def __init__(self, url: str, timeout: float = 30):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"WebSocket handshake closed: {head!r}")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("WebSocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise ConnectionError("WebSocket closed by the browser")
            if opcode in (0x9, 0xA):          # ping / pong: not used by DevTools
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """One headless Chromium process (fresh profile) and a DevTools session on its page."""

    def __init__(self, workdir: Path, timeout: float = 30):
        path = chromium_path()
        if path is None:
            raise RuntimeError("chromium is not installed (scripts/test installs Debian's chromium)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "chromium.log"
        self.timeout = timeout
        self.events: list[dict] = []
        self.next_id = 0
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [path, *CHROMIUM_FLAGS, f"--user-data-dir={self.workdir / 'profile'}",
                 "--remote-debugging-port=0", "about:blank"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.ws = None
        try:
            port = self._devtools_port()
            http = helpers.session()
            targets = helpers.wait_until(
                lambda: [t for t in http.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                         if t.get("type") == "page"],
                timeout, interval=0.2, what="Chromium's page target")
            self.ws = WebSocket(targets[0]["webSocketDebuggerUrl"], timeout)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}):\n{helpers.tail(self.log_path)}")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/",
                          self.log_path.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open DevTools:\n{helpers.tail(self.log_path)}")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.ws.sock], [], [], 0.5) if not self.ws.buffer else ([1], [], [])
            if not ready:
                continue
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"no answer to {method} within {self.timeout}s")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str | None = None):
        """Poll `expression` until it is truthy. While the page is still loading (no body yet)
        an expression may throw: that counts as "not yet"."""
        errors: list[str] = []

        def attempt():
            try:
                return self.evaluate(expression)
            except RuntimeError as err:
                errors[:] = [str(err)[:300]]
                return None

        try:
            return helpers.wait_until(attempt, timeout, interval=0.2, what=what or expression)
        except TimeoutError as err:
            raise TimeoutError(f"{err} (last error: {errors[0] if errors else 'none'})") from None

    def exceptions(self) -> list[dict]:
        """JavaScript exceptions the page threw so far."""
        return [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Path(path).write_bytes(data)
        return data

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc.poll() is None:
            helpers.stop_process(self.proc, signal.SIGTERM, timeout=10)
        try:                                       # its helper processes (same new session)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
