"""The debugger's HTTP side: one page, its script and style, a small JSON API and images.

    GET  /                 the page            GET /img/<key>.png   an image of the episode
    GET  /api/state        everything shown    POST /api/<action>   JSON in, {ok, state|error}

Actions: shipped, domain {domain, seed, kind}, upload {image_b64, question, answer},
policy {mode, path}, step {text?, seed?}, run {seed?}, rerun {turn, call?, seed?}, score,
save {path}, replay {path}, replay_select {index}. Replies are {"ok": true, "state"} or
{"ok": false, "error", "state"}: bad input is an answer (HTTP 200, ok false), not an HTTP error.

Standard library only (ThreadingHTTPServer). Bound to loopback by default. POSTs must be
application/json and name a loopback Host (unless bound elsewhere on purpose), so a web page
in the same browser cannot drive the debugger (no CORS preflight is ever answered, and DNS
rebinding fails the Host check). One lock serialises every action on the session.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import view
from .samples import MAX_UPLOAD_BYTES, DebugError
from .session import Session

STATIC = {"/": ("page.html", "text/html; charset=utf-8"),
          "/page.js": ("page.js", "text/javascript; charset=utf-8"),
          "/page.css": ("page.css", "text/css; charset=utf-8")}
MAX_BODY = MAX_UPLOAD_BYTES * 4 // 3 + (1 << 20)  # a base64 image upload plus the form
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed in (None, ""):
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DebugError(f"seed must be a whole number, got {seed!r}")
    return seed


def _upload(s: Session, body: dict[str, Any]) -> None:
    data = body.get("image_b64") or ""
    if not isinstance(data, str) or not data:
        raise DebugError("choose an image file to upload")
    if len(data) > MAX_BODY:
        raise DebugError(f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
    try:
        raw = base64.b64decode(data.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        raise DebugError("the upload is not base64 data") from None
    s.load_upload(raw, str(body.get("question") or ""), str(body.get("answer") or ""))


class App:
    """The session, its image store and lock: what the handler threads share."""

    def __init__(self, session: Session, allow_any_host: bool = False) -> None:
        self.session = session
        self.store = view.ImageStore()
        self.lock = threading.Lock()
        self.replay_index = 0
        self.allow_any_host = allow_any_host
        s = session
        self.actions = {
            "shipped": lambda b: s.load_shipped(),
            "domain": lambda b: s.load_domain(str(b.get("domain", "")), b.get("seed"),
                                              str(b.get("kind") or "")),
            "upload": lambda b: _upload(s, b),
            "policy": lambda b: s.set_policy(str(b.get("mode", "")), str(b.get("path") or "")),
            "step": lambda b: s.step(b.get("text"), _seed(b)),
            "run": lambda b: s.run(_seed(b)),
            "rerun": lambda b: s.rerun(b.get("turn"), b.get("call"), _seed(b)),
            "score": lambda b: s.score_answer(),
            "save": lambda b: s.save(str(b.get("path") or "")),
            "replay": self._replay,
            "replay_select": self._replay_select,
        }

    def _replay(self, body: dict[str, Any]) -> None:
        self.session.open_replay(str(body.get("path") or ""))
        self.replay_index = 0

    def _replay_select(self, body: dict[str, Any]) -> None:
        i = body.get("index")
        if not self.session.replay:
            raise DebugError("open a trajectory file first")
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(
                self.session.replay):
            raise DebugError(f"no episode {i!r} in this file")
        self.replay_index = i

    def state(self) -> dict[str, Any]:
        return view.state(self.session, self.store, self.replay_index)

    def act(self, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON reply). Bad input: ok false with the message; the session stays."""
        fn = self.actions.get(action)
        if fn is None:
            return 404, {"ok": False, "error": f"unknown action {action!r} (valid: "
                                               f"{', '.join(self.actions)})"}
        with self.lock:
            try:
                fn(body)
                status, reply = 200, {"ok": True}
            except DebugError as e:  # an answer, not a failure: 200 keeps the console clean
                status, reply = 200, {"ok": False, "error": str(e)}
            except Exception as e:  # a bug: report it on the page rather than hang up
                status, reply = 500, {"ok": False,
                                      "error": f"internal error: {type(e).__name__}: {e}"}
            reply["state"] = self.state()
        return status, reply


class Handler(BaseHTTPRequestHandler):
    server_version = "vlmagent-debug"
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is the UI's
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if ctype.startswith(
            "application/json") else "max-age=3600" if ctype == "image/png" else "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        if self.app.allow_any_host:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return is_loopback(host)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if not self._host_ok():
            return self._json(403, {"ok": False, "error": "Host must be a loopback address"})
        if path in STATIC:
            name, ctype = STATIC[path]
            return self._send(200, (Path(__file__).parent / name).read_bytes(), ctype)
        if path == "/api/state":
            with self.app.lock:
                return self._json(200, {"ok": True, "state": self.app.state()})
        if path.startswith("/img/") and path.endswith(".png"):
            data = self.app.store.png(path[len("/img/"):-len(".png")])
            if data is not None:
                return self._send(200, data, "image/png")
        self._json(404, {"ok": False, "error": f"not found: {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if not self._host_ok():
            return self._json(403, {"ok": False, "error": "Host must be a loopback address"})
        if not path.startswith("/api/"):
            return self._json(404, {"ok": False, "error": f"not found: {path}"})
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._json(415, {"ok": False, "error": "send application/json"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return self._json(413, {"ok": False, "error": f"request body too large (at most "
                                                          f"{MAX_BODY >> 20} MiB)"})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._json(400, {"ok": False, "error": f"request is not JSON: {e}"})
        if not isinstance(body, dict):
            return self._json(400, {"ok": False, "error": "request must be a JSON object"})
        status, reply = self.app.act(path[len("/api/"):], body)
        self._json(status, reply)


def make_server(session: Session, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for `session` (not started); port 0 picks a free port (see server_address)."""
    app = App(session, allow_any_host=not is_loopback(host))
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}:{port}/"


def bind_warning(host: str) -> str | None:
    """What to tell the person who binds the debugger beyond loopback (None on loopback)."""
    if is_loopback(host):
        return None
    return (f"warning: binding to {host}: anyone who can reach this address can drive the "
            "debugger, load models, and read and write trajectory files on this machine")


def serve(session: Session, host: str = "127.0.0.1", port: int = 7860) -> int:
    """Run until Ctrl-C; prints the address (and a warning when not bound to loopback)."""
    warning = bind_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        server = make_server(session, host, port)
    except OSError as e:
        print(f"vlmagent debug: cannot listen on {host}:{port}: {e.strerror or e} "
              "(try --port 0 for a free port)", file=sys.stderr)
        return 1
    print(f"vlmagent debug: serving on {url_of(server)} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
