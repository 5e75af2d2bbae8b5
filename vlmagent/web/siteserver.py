"""Serve one site folder on 127.0.0.1, and never anything outside it.

`resolve` is the single authority on which URL path maps to which file: the HTTP server uses it
and so does the structure reward when it checks whether a link resolves, so both always agree.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from mimetypes import guess_type
from pathlib import Path
from urllib.parse import unquote

# Fixed types for the web formats that matter, so serving never depends on /etc/mime.types.
_TYPES = dict(item.split("=") for item in """
    .html=text/html .htm=text/html .xhtml=application/xhtml+xml .css=text/css .txt=text/plain
    .js=text/javascript .mjs=text/javascript .json=application/json .xml=application/xml
    .svg=image/svg+xml .png=image/png .jpg=image/jpeg .jpeg=image/jpeg .gif=image/gif
    .webp=image/webp .avif=image/avif .ico=image/x-icon .woff=font/woff .woff2=font/woff2
    .ttf=font/ttf .otf=font/otf .wasm=application/wasm .mp4=video/mp4 .webm=video/webm
    .mp3=audio/mpeg .wav=audio/wav .pdf=application/pdf""".split())
_CHARSET_CHECK_BYTES = 2_000_000  # larger text files are served without a charset (not sure)
_DRIVE = re.compile(r"^/*[A-Za-z]:")  # "C:/..." or "/C:\..." once decoded
# serve_forever's poll interval: stop() waits for one poll, so it takes milliseconds instead of
# up to the default 0.5 s.
POLL_S = 0.02


def resolve(root: Path, url_path: str) -> tuple[int, Path | None]:
    """Map a URL path to a regular file inside `root`: (200, real path), (403, None) or (404, None).

    Query and fragment are ignored; %-escapes are decoded once. Anything that could reach outside
    the root (dot-dot segments, backslashes, NUL, absolute or drive paths after decoding, symlinks
    out of the root, even via a parent folder) is 403 whether or not the target exists.
    """
    path = url_path.split("#", 1)[0].split("?", 1)[0]
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return 404, None
    if "\x00" in decoded or "\\" in decoded or decoded.startswith("//") or _DRIVE.match(decoded):
        return 403, None
    parts = decoded.split("/")
    if ".." in parts:
        return 403, None
    real_root = os.path.realpath(root)
    target = os.path.join(real_root, *[p for p in parts if p not in ("", ".")])
    code, real = _inside(real_root, target)
    if code == 200 and stat.S_ISDIR(os.stat(real).st_mode):
        code, real = _inside(real_root, os.path.join(real, "index.html"))
    if code == 200 and not stat.S_ISREG(os.stat(real).st_mode):
        return 404, None  # a folder without index.html, a fifo, a device: never listed or read
    return code, (Path(real) if code == 200 else None)


def _inside(real_root: str, path: str) -> tuple[int, str]:
    try:
        real = os.path.realpath(path, strict=True)
    except (FileNotFoundError, NotADirectoryError):
        # Missing: still forbidden if the part that does exist already points outside the root.
        real = os.path.realpath(path)
        return (404 if _contains(real_root, real) else 403), ""
    except (OSError, RuntimeError):  # symlink loops, permissions, over-long names
        return 403, ""
    return (200, real) if _contains(real_root, real) else (403, "")


def _contains(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def content_type(path: Path, head: bytes | None) -> str:
    """Type by extension; text gets `charset=utf-8` only when its bytes are valid UTF-8."""
    ctype = _TYPES.get(path.suffix.lower()) or guess_type(path.name)[0]
    ctype = ctype or "application/octet-stream"
    if head is not None and (ctype.startswith("text/") or ctype.endswith(("json", "xml"))):
        try:
            head.decode("utf-8")
            return f"{ctype}; charset=utf-8"
        except UnicodeDecodeError:
            pass
    return ctype


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "vlmagent-site"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(body=self.command == "GET")

    do_HEAD = do_GET

    def __getattr__(self, name: str):  # every other do_METHOD: 405, not the stdlib's 501
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._plain(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"}, body=True)

    def _serve(self, body: bool) -> None:
        code, file = resolve(self.server.root, self.path)
        if code != 200 or file is None:
            return self._plain(HTTPStatus(code), {}, body)
        raw = self.path.split("?", 1)[0].split("#", 1)[0]
        if file.name == "index.html" and not raw.endswith(("/", "index.html")):
            # "/docs" -> "/docs/" so relative links inside docs/index.html resolve like on any host
            return self._plain(HTTPStatus.MOVED_PERMANENTLY, {"Location": raw + "/"}, body)
        try:
            f = open(file, "rb")
        except OSError:
            return self._plain(HTTPStatus.FORBIDDEN, {}, body)
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(size) if size <= _CHARSET_CHECK_BYTES else None
            self.send_response(200)
            self.send_header("Content-Type", content_type(file, head))
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not body:
                return
            try:
                if head is not None:
                    self.wfile.write(head)
                else:  # stream big files in chunks: a 1 GB file never sits in memory
                    shutil.copyfileobj(f, self.wfile, 64 * 1024)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _plain(self, code: HTTPStatus, headers: dict[str, str], body: bool) -> None:
        # Own short body: the stdlib error page would echo the request path back.
        data = f"<!doctype html><title>{code.value}</title><h1>{code.value} {code.phrase}</h1>"
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data.encode())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if isinstance(code, int) else 0
        with self.server.lock:
            self.server.log.append((self.command or "", self.path or "", status))

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    lock: threading.Lock
    log: list[tuple[str, str, int]]


class SiteServer:
    """Context manager serving `root` on http://127.0.0.1:<free port> from a daemon thread."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._server: _Server | None = None
        self.port, self.base_url = 0, ""  # set by start()
        self._lock = threading.Lock()
        self._log: list[tuple[str, str, int]] = []

    def start(self) -> SiteServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.root, server.lock, server.log = self.root, self._lock, self._log
        threading.Thread(target=server.serve_forever, args=(POLL_S,), daemon=True).start()
        self._server, self.port = server, int(server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request answered so far, in order."""
        with self._lock:
            return list(self._log)
