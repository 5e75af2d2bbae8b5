"""resolve() and SiteServer: nothing outside the site root is ever served, and serving is sane."""
from __future__ import annotations

import http.client
import os
import resource
import socket
import threading
import time
from pathlib import Path

import pytest

from vlmagent.web.sitegen import generate_sites, write_hostile_sites, write_site
from vlmagent.web.siteserver import POLL_S, SiteServer, resolve

PASSWD = b"root:x:0:0"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = write_site(tmp_path / "site", {
        "index.html": "<!doctype html><title>Home</title><p>héllo</p>",
        "style.css": "body{color:red}",
        "img/logo.png": b"\x89PNG\r\n\x1a\n" + bytes(16),
        "docs/index.html": "<p>docs</p>",
        "empty/.keep": "",
        "latin.html": "<p>caf\xe9</p>".encode("latin-1"),
        "my page.html": "<p>space</p>",
    })
    (tmp_path / "outside.txt").write_text("outside the root")
    os.symlink("/etc/passwd", root / "secret.txt")
    os.symlink("/etc", root / "etcdir")
    os.symlink(tmp_path / "outside.txt", root / "sneaky.txt")
    os.symlink(root / "style.css", root / "alias.css")  # a symlink that stays inside: fine
    os.symlink(tmp_path, root / "up")  # parent of the root, through a symlinked folder
    return root


def get(server: SiteServer, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)  # path sent raw
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


def test_resolve_serves_files_and_directory_index(site: Path) -> None:
    real = Path(os.path.realpath(site))
    assert resolve(site, "/index.html") == (200, real / "index.html")
    assert resolve(site, "/") == (200, real / "index.html")
    assert resolve(site, "/docs/") == (200, real / "docs/index.html")
    assert resolve(site, "/docs") == (200, real / "docs/index.html")
    assert resolve(site, "/style.css?v=3#top") == (200, real / "style.css")
    assert resolve(site, "/./img/./logo.png") == (200, real / "img/logo.png")
    assert resolve(site, "/my%20page.html") == (200, real / "my page.html")
    assert resolve(site, "index.html") == (200, real / "index.html")  # relative: from the root
    assert resolve(site, "/alias.css") == (200, real / "style.css")


@pytest.mark.parametrize("path", ["/missing.html", "/empty/", "/empty", "/img/nope.png",
                                  "/index.html/extra", "/%ff%fe.html", "/%252e%252e/etc/passwd"])
def test_resolve_missing_is_404(site: Path, path: str) -> None:
    assert resolve(site, path) == (404, None)


@pytest.mark.parametrize("path", [
    "/../etc/passwd", "/../../../../etc/passwd", "/docs/../../etc/passwd", "/%2e%2e/etc/passwd",
    "/%2E%2E/%2E%2E/etc/passwd", "/..%2f..%2fetc%2fpasswd", "/docs/%2e%2e/%2e%2e/outside.txt",
    "/..\\..\\etc\\passwd", "/%5c..%5cetc%5cpasswd", "/index.html%00.png", "//etc/passwd",
    "/%2Fetc%2Fpasswd", "/C:/Windows/win.ini", "/c:%5cboot.ini", "/secret.txt",
    "/etcdir/passwd", "/etcdir/hostname", "/etcdir/does-not-exist", "/etcdir/", "/sneaky.txt",
    "/up/outside.txt", "/..", "/docs/..%2F..%2Foutside.txt",
])
def test_resolve_escapes_are_403(site: Path, path: str) -> None:
    assert resolve(site, path) == (403, None)


def test_server_serves_with_types_and_no_store(site: Path) -> None:
    with SiteServer(site) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        status, headers, body = get(server, "/index.html")
        assert status == 200 and "héllo".encode() in body
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Length"] == str(len(body))
        assert get(server, "/style.css")[1]["Content-Type"] == "text/css; charset=utf-8"
        assert get(server, "/img/logo.png")[1]["Content-Type"] == "image/png"
        # Latin-1 bytes are not valid UTF-8: no charset is claimed, the browser decides.
        assert get(server, "/latin.html")[1]["Content-Type"] == "text/html"
        status, headers, body = get(server, "/docs")
        assert status == 301 and headers["Location"] == "/docs/"
        assert get(server, "/docs/")[2] == b"<p>docs</p>"


def test_server_methods_and_log(site: Path) -> None:
    with SiteServer(site) as server:
        status, headers, body = get(server, "/index.html", "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, headers, _ = get(server, "/index.html", method)
            assert status == 405 and headers["Allow"] == "GET, HEAD"
        get(server, "/missing.png")
        assert server.requests == [("HEAD", "/index.html", 200), ("POST", "/index.html", 405),
                                   ("PUT", "/index.html", 405), ("DELETE", "/index.html", 405),
                                   ("PATCH", "/index.html", 405), ("OPTIONS", "/index.html", 405),
                                   ("GET", "/missing.png", 404)]


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/secret.txt",
                                  "/etcdir/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
                                  "/%2Fetc%2Fpasswd", "//etc/passwd", "/..\\..\\etc\\passwd"])
def test_server_never_serves_outside(site: Path, path: str) -> None:
    with SiteServer(site) as server:
        status, _, body = get(server, path)
        assert status in (403, 404)
        assert PASSWD not in body and path.encode() not in body  # error pages do not echo paths


def test_raw_socket_traversal_is_refused(site: Path) -> None:
    with SiteServer(site) as server, socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /../../../../etc/passwd HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.0 403") and PASSWD not in data


def test_big_file_is_streamed_not_loaded(site: Path) -> None:
    size = 1 << 30
    with open(site / "big.bin", "wb") as f:
        f.truncate(size)  # sparse: 1 GiB on paper, nothing on disk
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with SiteServer(site) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/big.bin")
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
        assert resp.headers["Content-Type"] == "application/octet-stream"
        got = 0
        while got < 32 << 20:
            got += len(resp.read(1 << 20))
        conn.close()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 200


def test_concurrent_requests_and_fast_stop(site: Path) -> None:
    server = SiteServer(site).start()
    results: list[int] = []

    def worker() -> None:
        for _ in range(10):
            results.append(get(server, "/style.css")[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 80 and len(server.requests) == 80
    # stop() waits for one poll of serve_forever, every POLL_S; with serve_forever's default
    # 0.5 s poll a stop would take 0.25 s on average. The mean of five stops (each server has
    # answered a request) separates the two even when one stop is descheduled on a busy machine.
    servers = [server] + [SiteServer(site).start() for _ in range(4)]
    took = []
    for s in servers:
        assert get(s, "/style.css")[0] == 200
        t = time.perf_counter()
        s.stop()
        took.append(time.perf_counter() - t)
    assert sum(took) / len(took) < 5 * POLL_S, took
    for s in servers:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", s.port), timeout=1)


def test_sitegen_is_deterministic_and_valid(tmp_path: Path) -> None:
    from PIL import Image

    def snapshot(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    a = generate_sites(tmp_path / "a", 10, seed=4)
    generate_sites(tmp_path / "b", 10, seed=4)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    generate_sites(tmp_path / "c", 10, seed=5)
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")
    for site in a:
        assert resolve(site, "/index.html")[0] == 200 and 1 <= len(list(site.glob("*.html"))) <= 4
        with Image.open(site / "logo.png") as im:
            im.load()
            assert im.mode == "RGB" and 8 <= im.width <= 24


def test_hostile_sites_are_all_there(tmp_path: Path) -> None:
    sites = write_hostile_sites(tmp_path)
    assert set(sites) == {"infinite_loop", "alert_spam", "reload_loop", "external_assets",
                          "file_fetch", "symlink_escape", "binary_garbage", "empty",
                          "missing_index", "memory_hog", "huge_dom", "popup_spam", "port_probe"}
    assert list(sites["empty"].iterdir()) == []
    assert [p.name for p in sites["missing_index"].iterdir()] == ["about.html"]
    assert b"\x00" in (sites["binary_garbage"] / "index.html").read_bytes()
    assert os.readlink(sites["symlink_escape"] / "secret.txt") == "/etc/passwd"
    assert resolve(sites["symlink_escape"], "/secret.txt") == (403, None)
    assert resolve(sites["symlink_escape"], "/etc/passwd") == (403, None)
    write_hostile_sites(tmp_path)  # idempotent: rewriting over an existing tree works
