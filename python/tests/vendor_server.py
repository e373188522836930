"""A fake vendor endpoint for the semaphore example: a real HTTP server on 127.0.0.1 that
the test starts in a thread. Each ``POST /<vendor>/orders/<id>`` takes ``delay`` seconds;
the server counts the calls in progress per vendor, their peak, and the calls served."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List


class VendorServer:
    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self._mutex = threading.Lock()
        self.current: Dict[str, int] = {}
        self.peak: Dict[str, int] = {}
        self.served: Dict[str, List[str]] = {}
        self.in_call = threading.Condition(self._mutex)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                parts = self.path.strip("/").split("/")
                vendor, order = parts[0], parts[-1]
                with outer._mutex:
                    now = outer.current[vendor] = outer.current.get(vendor, 0) + 1
                    outer.peak[vendor] = max(outer.peak.get(vendor, 0), now)
                    outer.in_call.notify_all()
                time.sleep(outer.delay)
                # Counted down before the reply is sent: the caller frees its place only
                # after reading the reply, so the count never shows a call that has ended.
                with outer._mutex:
                    outer.current[vendor] -= 1
                    outer.served.setdefault(vendor, []).append(order)
                body = json.dumps({"order": order, "concurrent": now,
                                   "worker": self.headers.get("X-Worker", "")}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller died meanwhile

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stats(self, vendor: str) -> Dict[str, object]:
        with self._mutex:
            return {"current": self.current.get(vendor, 0), "peak": self.peak.get(vendor, 0),
                    "served": list(self.served.get(vendor, []))}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
