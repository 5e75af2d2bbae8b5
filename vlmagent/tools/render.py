"""Render HTML (or a site folder) in the sandboxed browser and hand back the screenshot.

The renderer is the lead's Browser (vlmagent.web.browser), which serves pages only from their own
folder and blocks the network; this tool only bounds its input and keeps paths in workdir.
"""
from __future__ import annotations

import atexit
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from vlmagent.tools.base import Tool, ToolEnv
from vlmagent.types import ToolResult

MAX_HTML_CHARS = 200_000
_SHARED: Any = None


class ThreadRenderer:
    """A sandboxed Browser that lives on a thread of its own. Playwright's sync API binds a
    browser to the thread that started it, and a thread running one cannot start another; on
    its own thread the renderer leaves the caller's thread free (a test, the debugger or a
    report check may start Playwright there). A daemon thread, not an executor: it must still
    be there when the atexit hook closes the browser."""

    def __init__(self) -> None:
        import queue
        import threading

        from vlmagent.web.browser import Browser

        self._browser = Browser()  # launched on first use, on the renderer's thread
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="render_html", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, kw, done = job
            try:
                done["value"] = fn(*args, **kw)
            except BaseException as e:  # handed back to the caller, raised there
                done["error"] = e
            done["event"].set()

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        import threading

        if not self._thread.is_alive():
            raise RuntimeError("the renderer was closed")
        done: dict[str, Any] = {"event": threading.Event()}
        self._jobs.put((fn, args, kw, done))
        done["event"].wait()
        if "error" in done:
            raise done["error"]
        return done["value"]

    def screenshot_html(self, *args: Any, **kw: Any) -> bytes:
        return self._call(self._browser.screenshot_html, *args, **kw)

    def screenshot_site(self, *args: Any, **kw: Any) -> bytes:
        return self._call(self._browser.screenshot_site, *args, **kw)

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._browser.close)
            self._jobs.put(None)
            self._thread.join(10)


def default_renderer() -> Any:
    """This process's renderer for rollouts that were given none: one sandboxed Browser
    (default browser settings) on its own thread, launched on its first screenshot and closed
    at exit."""
    global _SHARED
    if _SHARED is None:
        _SHARED = ThreadRenderer()
        atexit.register(_SHARED.close)
    return _SHARED


class RenderHtmlTool(Tool):
    """Screenshot an HTML string or a site folder so the model can see what its code looks like."""

    name = "render_html"
    thread_safe = False
    description = ("Render HTML in a browser and return a screenshot. Give either html (a full "
                   "HTML document) or path (a site folder or .html file, relative to the "
                   "working directory).")
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "html": {"type": "string", "minLength": 1, "maxLength": MAX_HTML_CHARS,
                     "description": "the HTML document to render"},
            "path": {"type": "string", "minLength": 1,
                     "description": "site folder (renders its index.html) or .html file"},
        },
        "additionalProperties": False,
    }

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        self.width, self.height = width, height

    def check(self, args: dict[str, Any]) -> str | None:
        err = super().check(args)
        if err is None and ("html" in args) == ("path" in args):
            return "give exactly one of 'html' or 'path'"
        return err

    def run(self, args: dict[str, Any], env: ToolEnv) -> ToolResult:
        if env.renderer is None:
            return ToolResult(error=f"{self.name}: not available here (no browser in this "
                                    "environment)")
        if "html" in args:
            png = env.renderer.screenshot_html(args["html"], self.width, self.height)
            source = f"html ({len(args['html'])} characters)"
        else:
            target, err = self._resolve(args["path"], env)
            if err:
                return ToolResult(error=f"{self.name}: {err}")
            png = self._shoot_site(target, env)
            source = f"path {args['path']!r}"
        image = Image.open(io.BytesIO(png)).convert("RGB")
        out = env.add_image(image)
        w, h = env.images[out].seen
        return ToolResult(text=f"rendered {source} at {self.width}x{self.height}: new image "
                               f"{out!r}, {w}x{h} as you see it.", images=[image])

    def _resolve(self, rel: str, env: ToolEnv) -> tuple[Path, str | None]:
        """The page to render, refusing anything outside env.workdir."""
        if not env.workdir:
            return Path(), "'path' needs a working directory and none is set; pass 'html'"
        root = Path(env.workdir).resolve()
        if Path(rel).is_absolute():
            return Path(), f"path {rel!r} must be relative to the working directory"
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            return Path(), f"path {rel!r} leaves the working directory"
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or target.suffix.lower() not in (".html", ".htm"):
            return Path(), f"no HTML page at {rel!r} (a folder needs an index.html)"
        return target, None

    def _shoot_site(self, page: Path, env: ToolEnv) -> bytes:
        """Screenshot a page with its folder served, so relative assets load (sandboxed)."""
        shoot = getattr(env.renderer, "screenshot_site", None)
        if shoot is not None:
            # A URL path: a file named "a#b.html" must not turn into a fragment.
            return shoot(page.parent, "/" + quote(page.name), self.width, self.height)
        # A renderer without site support: the page alone (relative assets will not load).
        return env.renderer.screenshot_html(page.read_text(encoding="utf-8", errors="replace"),
                                            self.width, self.height)
