"""Headless Chromium driven over the DevTools protocol on a pipe (no extra package, no open port).

The browser's only way out is the given HTTP proxy (the Cloud Run-like front, which refuses
anything but the service host), and its DNS resolver maps every name to nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    return next(filter(None, (shutil.which(name) for name in CHROMIUM_NAMES)), None)


def chromium_arguments(user_data_dir: Path, proxy_url: str) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-domain-reliability", "--no-default-browser-check", "--disable-extensions",
        f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "--window-size=1440,900",
        f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>",
        # The front terminates TLS for the service host with a self-signed certificate.
        "--ignore-certificate-errors",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "about:blank",
    ]


class Chromium:
    """`login` answers the browser's basic-auth challenges, as a user typing in the dialog would."""

    def __init__(self, user_data_dir: Path, proxy_url: str, login: tuple[str, str]):
        self._login = login
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def pipe_fds():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [chromium_binary(), *chromium_arguments(user_data_dir, proxy_url)],
            preexec_fn=pipe_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._condition = threading.Condition()
        self._write_lock = threading.Lock()
        self.auth_challenges = 0
        self.network_events: list[dict] = []  # Network.* events of pages that enabled the Network domain
        threading.Thread(target=self._read_messages, daemon=True).start()

    def _read_messages(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 65536):
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict) -> None:
        if "id" in message:
            with self._condition:
                self._replies[message["id"]] = message
                self._condition.notify_all()
        elif message.get("method", "").startswith("Network."):
            with self._condition:
                self.network_events.append(message)
        elif message.get("method") == "Fetch.requestPaused":
            self._post("Fetch.continueRequest", {"requestId": message["params"]["requestId"]},
                       message.get("sessionId"))
        elif message.get("method") == "Fetch.authRequired":
            self.auth_challenges += 1
            username, password = self._login
            self._post("Fetch.continueWithAuth", {
                "requestId": message["params"]["requestId"],
                "authChallengeResponse": {"response": "ProvideCredentials", "username": username,
                                          "password": password},
            }, message.get("sessionId"))

    def _post(self, method: str, params: dict, session_id: str | None = None) -> int:
        with self._write_lock:
            self._next_id += 1
            message = {"id": self._next_id, "method": method, "params": params}
            if session_id:
                message["sessionId"] = session_id
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
            return self._next_id

    def call(self, method: str, params: dict | None = None, session_id: str | None = None,
             timeout: float = 30) -> dict:
        message_id = self._post(method, params or {}, session_id)
        with self._condition:
            if not self._condition.wait_for(lambda: message_id in self._replies, timeout):
                raise TimeoutError(f"no reply to {method}")
            reply = self._replies.pop(message_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})
        session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, session["sessionId"])
        page.call("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})
        page.call("Page.enable")
        return page

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


class Page:
    def __init__(self, browser: Chromium, session_id: str):
        self.browser = browser
        self.session_id = session_id

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.call(method, params, self.session_id, timeout)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str, timeout: float = 30):
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        return result.get("result", {}).get("value")

    def wait_for_text(self, texts: tuple[str, ...], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        body = ""
        while time.monotonic() < deadline:
            body = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(text in body for text in texts):
                return body
            time.sleep(0.5)
        raise TimeoutError(f"page never showed {texts}; it shows: {body[:1000]!r}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
