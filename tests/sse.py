"""A Server-Sent Events client for the tests: one real HTTP connection read by a thread.

It parses the stream as a browser's EventSource does (fields ``id``, ``event``, ``data``,
``retry``; a blank line ends a message) and keeps every message, with the response's status and
headers, so tests can wait on what arrived with ``tests.bridge.poll``.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Message:
    event: str
    data: str
    id: str

    @property
    def error(self) -> bool:
        return self.data.startswith("error")


class SseStream:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.connection.request("GET", path, headers={"Accept": "text/event-stream",
                                                      **(headers or {})})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.messages: list[Message] = []
        self.retry: int | None = None
        self.ended = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()
        else:
            self.body = self.response.read()
            self.ended = True

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                raw = self.response.readline()
                if not raw:
                    break
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if "data" in fields or "event" in fields:
                        message = Message(fields.get("event", "message"), fields.get("data", ""),
                                          fields.get("id", ""))
                        with self._lock:
                            self.messages.append(message)
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retry = int(value)
                elif name:
                    fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in \
                        fields else value
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # AttributeError: http.client, closed from another thread while reading (close())
            pass
        finally:
            self.ended = True

    def of(self, event: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.event == event]

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        try:
            self.connection.sock.shutdown(2)
        except (OSError, AttributeError):
            pass
        self.connection.close()

    def __enter__(self) -> SseStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
