"""Stage 1, structure: is this a site at all, and does everything it references stay inside it?

No browser: pure file checks, so broken output costs milliseconds, not a page load.
Structure gates only what makes a site unscorable. Hard checks (any failure fails the stage):
index.html is a regular file inside the root, it decodes as text, parses as HTML with visible
body content (or a script that renders it), no symlink escapes the root, no reference escapes
the root. An index that is cut off or a generation loop (one passage repeated over most of the
page) is listed in `unfinished`: it runs and shows something, so execution gates on it, which
ranks it above a blank page and below every working one. Internal references that are merely
missing (a broken image, an absent stylesheet) are listed per file and lower the score, never the
gate: a page that shows its content with a broken image is a page, and execution penalises the
failed request where the browser meets it.
"""
from __future__ import annotations

import os
import posixpath
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from vlmagent.config import StructureConfig
from vlmagent.rewards.cascade import SiteContext
from vlmagent.types import StageScore
from vlmagent.web.siteserver import resolve

HTML_EXT = {".html", ".htm", ".xhtml"}
_REF_ATTRS = {"href", "src", "poster", "data"}
_SKIP_TEXT = {"script", "style", "noscript", "template", "head", "title"}
_MEDIA = {"img", "svg", "canvas", "video", "picture", "input", "button", "select", "textarea",
          "iframe", "object", "embed"}
_KNOWN_TAGS = {"html", "head", "body", "div", "p", "span", "a", "h1", "h2", "h3", "h4", "h5",
               "h6", "main", "section", "header", "footer", "nav", "ul", "ol", "li", "table",
               "img", "script", "style", "link", "meta", "title", "form", "button", "canvas",
               "svg", "article", "aside", "br", "em", "strong", "pre", "code", "label", "input"}
# Elements whose end tag may be left out (or that have none): an open one at the end of a file
# says nothing; an open div or section after an explicit <html> means the file was cut off.
_OPTIONAL_END = {"html", "head", "body", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td",
                 "th", "thead", "tbody", "tfoot", "colgroup", "caption", "rt", "rp", "area",
                 "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                 "track", "wbr", "param", "keygen"}
REPEAT_MIN_CHARS = 40  # a text chunk this long, repeated REPEAT_MIN_TIMES times and making up
REPEAT_MIN_TIMES = 10  # more than half the page's text, is a generation loop, not content
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""", re.I)
_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
MAX_LISTED = 50  # failures listed in details; the count is always exact


class _Page(HTMLParser):
    """Collects references, visible text and element counts from one HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.styles: list[str] = []
        self.tags = 0
        self.known = 0
        self.text_chars = 0
        self.media = 0
        self.scripts = 0
        self._skip = 0
        self._in_style = False
        self.open: list[str] = []  # containers not closed yet
        self.explicit_root = False  # the file opened <html> or <body> itself
        self.closed_root = False
        self.chunks: dict[str, int] = {}  # long text chunks -> how often they occur

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        self.known += tag in _KNOWN_TAGS
        self.media += tag in _MEDIA
        self.scripts += tag == "script"
        self.explicit_root |= tag in ("html", "body")
        if tag not in _OPTIONAL_END:
            self.open.append(tag)
        if tag in _SKIP_TEXT:
            self._skip += 1
        self._in_style = tag == "style"
        for k, v in attrs:
            if not v:
                continue
            if k in _REF_ATTRS and not (tag == "form"):
                self.refs.append(v.strip())
            elif k == "srcset":
                self.refs.extend(c.strip().split()[0] for c in v.split(",") if c.strip())
            elif k == "style":
                self.styles.append(v)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self.open and self.open[-1] == tag:
            self.open.pop()
        if tag in _SKIP_TEXT:
            self._skip -= 1

    def handle_endtag(self, tag: str) -> None:
        self.closed_root |= tag in ("html", "body")
        if tag in self.open:  # close it and whatever was left open inside it
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]
        if tag in _SKIP_TEXT and self._skip > 0:
            self._skip -= 1
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        elif not self._skip:
            text = " ".join(data.split())
            self.text_chars += len(text)
            if len(text) >= REPEAT_MIN_CHARS:
                self.chunks[text] = self.chunks.get(text, 0) + 1

    def cut_off(self, text: str, leftover: str) -> bool:
        """The file ends inside a tag or comment, or opened <html>/<body> and ends mid-text with
        containers (div, section, script...) still open and no </body> or </html>: a truncated
        generation. Sloppy but finished pages end with a tag, so they are not caught."""
        if leftover.lstrip().startswith("<"):
            return True
        return (self.explicit_root and not self.closed_root and bool(self.open)
                and not text.rstrip().endswith(">"))

    def repeated(self) -> bool:
        """More than half the visible text is one long chunk repeated many times."""
        if not self.chunks:
            return False
        text, n = max(self.chunks.items(), key=lambda kv: len(kv[0]) * kv[1])
        return n >= REPEAT_MIN_TIMES and len(text) * n > 0.5 * self.text_chars


def decode_text(data: bytes) -> str | None:
    """Text of an HTML/CSS file, or None if it is binary (NUL bytes, control noise, bad charset)."""
    if b"\x00" in data:
        return None
    text = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        m = _CHARSET.search(data[:2048])
        if m:
            try:
                text = data.decode(m.group(1).decode("ascii"))
            except (LookupError, UnicodeDecodeError):
                text = None
    if text is None:
        return None
    ctrl = sum(1 for c in text[:100_000] if ord(c) < 32 and c not in "\t\n\r\f")
    return None if ctrl > 0.02 * max(1, min(len(text), 100_000)) else text


def _classify(ref: str) -> str:
    """'skip' (fragment, data:, mailto: ...), 'external', 'file', or 'internal'."""
    if not ref or ref.startswith("#"):
        return "skip"
    if ref.startswith("//"):
        return "external"
    scheme = urlsplit(ref).scheme.lower()
    if scheme in ("http", "https", "ftp", "ws", "wss"):
        return "external"
    if scheme == "file":
        return "file"
    if scheme and len(scheme) > 1:  # data:, blob:, mailto:, tel:, javascript: ... (c: is a path)
        return "skip"
    return "internal"


def _normalise(url_path: str) -> str | None:
    """Resolve '.' and '..' as a browser would; None when '..' climbs above the site root.

    (A browser clamps such paths at the root; we report them, since they show intent to escape.)
    """
    parts: list[str] = []
    for seg in url_path.split("/"):
        if seg == "..":
            if not parts:
                return None
            parts.pop()
        elif seg not in ("", "."):
            parts.append(seg)
    return "/" + "/".join(parts) + ("/" if url_path.endswith("/") and parts else "")


def _url_path(root: Path, file: Path) -> str:
    return "/" + file.relative_to(root).as_posix()


def _walk(root: Path, real_root: str, max_files: int, failures: list[dict]
          ) -> tuple[list[Path], int, bool]:
    """Regular files under root (without following links); records escaping or broken links."""
    files: list[Path] = []
    total = 0
    escape = False
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                target = os.path.realpath(p)
                if target != real_root and not target.startswith(real_root + os.sep):
                    # Say that it escapes, never where to: the target is host information.
                    failures.append({"file": rel, "problem": "symlink escapes the site root"})
                    escape = True
                elif not os.path.exists(target):
                    failures.append({"file": rel, "problem": "broken symlink"})
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink() and p.is_file():
                total += 1
                if len(files) < max_files:
                    files.append(p)
    return sorted(files), total, escape


def check_structure(root: Path, cfg: StructureConfig, deadline: float) -> StageScore:
    failures: list[dict] = []
    checks: dict[str, bool] = {}
    root = Path(root).absolute()
    if not root.is_dir():
        return StageScore("structure", 0.0, False,
                          {"failures": [{"file": ".", "problem": "site folder missing"}]})
    real_root = os.path.realpath(root)
    files, n_files, escape = _walk(root, real_root, cfg.max_files, failures)
    checks["no_escaping_symlinks"] = not escape

    # resolve() is the site server's own rule, so "present" means "the browser will get it".
    status, index = resolve(root, "/index.html")
    checks["index_present"] = status == 200 and index is not None
    index_real = os.path.realpath(index) if index is not None else None
    if checks["index_present"] and index_real not in {os.path.realpath(f) for f in files}:
        files.insert(0, Path(index_real))  # an in-root symlink named index.html: parse its target
    if not checks["index_present"]:
        others = sorted(f.relative_to(root).as_posix() for f in files if f.suffix in HTML_EXT)
        failures.append({"file": "index.html", "problem": "missing or not a regular file inside "
                         "the root" + (f" (html files found: {', '.join(others[:5])})" if others
                                       else "")})
    refs_total = refs_ok = 0
    external: list[str] = []
    missing: dict[str, list[str]] = {}  # file -> its references that resolve to nothing
    html_files = degenerate = 0  # HTML files parsed; those cut off or looping
    unfinished: list[str] = []  # why the index is not a finished page
    escapes = 0
    index_page: _Page | None = None
    timed_out = False
    for f in files:
        if time.monotonic() > deadline:
            timed_out = True
            failures.append({"file": "*", "problem": "structure check ran out of time"})
            break
        is_index = os.path.realpath(f) == index_real
        rel = "index.html" if is_index else f.relative_to(root).as_posix()
        is_html, is_css = f.suffix.lower() in HTML_EXT, f.suffix.lower() == ".css"
        if not (is_html or is_css or is_index):
            continue
        if f.stat().st_size > cfg.max_file_bytes:
            failures.append({"file": rel, "problem": f"larger than {cfg.max_file_bytes} bytes, "
                             "references not checked"})
            if is_index:
                checks["index_text"] = False
            continue
        text = decode_text(f.read_bytes())
        if text is None:
            failures.append({"file": rel, "problem": "not text (binary or undecodable)"})
            if is_index:
                checks["index_text"] = False
            continue
        refs: list[str]
        if is_css:
            page, refs, styles = None, [], [text]
        else:
            page = _Page()
            try:
                page.feed(text)
                leftover = page.rawdata  # what the parser still waits on at the end of the file
                page.close()
            except Exception as e:  # HTMLParser is lenient; this is a last resort
                failures.append({"file": rel, "problem": f"HTML parse error: {e}"})
                continue
            refs, styles = page.refs, page.styles
            found = (["cut off: the file ends inside a tag or with its containers still open"]
                     if page.cut_off(text, leftover) else [])
            if page.repeated():
                found.append(f"one passage repeated {max(page.chunks.values())} times "
                             "(a generation loop)")
            html_files += 1
            degenerate += bool(found)
            failures += [{"file": rel, "problem": p} for p in found]
            if is_index:  # the execution stage gates on these: the page still runs and shows
                unfinished = found  # something, so it ranks above a blank one, in the band of
                # pages that fail in the browser
        if is_index:
            checks["index_text"] = True
            index_page = page
        for css in styles:
            refs = refs + [m.group(2) or m.group(4) for m in _CSS_URL.finditer(css)]
        base = "/" if is_index else posixpath.dirname(_url_path(root, f)).rstrip("/") + "/"
        for ref in refs:
            kind = _classify(ref)
            if kind == "skip":
                continue
            if kind == "external":
                external.append(f"{rel}: {ref[:200]}")
                continue
            refs_total += 1
            if kind == "file":  # a host file: escapes the root like ../../etc/passwd
                escapes += 1
                failures.append({"file": rel, "problem": f"file:// reference {ref[:200]}"})
                continue
            path = urlsplit(ref).path
            if not path:
                refs_ok += 1
                continue
            target = _normalise(path if path.startswith("/") else base + path)
            code, _ = resolve(root, target) if target is not None else (403, None)
            if code == 200:
                refs_ok += 1
            elif code == 403:
                escapes += 1
                failures.append({"file": rel,
                                 "problem": f"reference escapes the root: {ref[:200]}"})
            else:
                failures.append({"file": rel, "problem": f"missing: {ref[:200]}"})
                missing.setdefault(rel, []).append(ref[:200])
    checks.setdefault("index_text", False)
    checks["index_html"] = bool(index_page and index_page.known > 0)
    if index_page is not None and not checks["index_html"]:
        failures.append({"file": "index.html", "problem": "no HTML elements"})
    content = bool(index_page and (index_page.text_chars or index_page.media))
    by_script = bool(index_page and not content and index_page.scripts)
    checks["index_content"] = content or by_script
    if index_page is not None and not checks["index_content"]:
        failures.append({"file": "index.html", "problem": "no visible body content"})
    checks["no_escaping_refs"] = escapes == 0
    ref_fraction = refs_ok / refs_total if refs_total else 1.0
    whole = 1.0 - degenerate / html_files if html_files else 1.0  # other pages cut off, looping
    hard = list(checks.values())
    score = (sum(hard) + ref_fraction + whole) / (len(hard) + 2)
    passed = all(hard) and not timed_out
    details = {
        "checks": checks,
        "files": n_files,
        "whole_pages": round(whole, 4),
        "unfinished": unfinished,
        "refs": {"internal": refs_total, "resolved": refs_ok, "fraction": round(ref_fraction, 4),
                 "external": len(external)},
        "content": "static" if content else ("rendered by script" if by_script else "none"),
        "failures": failures[:MAX_LISTED],
        "n_failures": len(failures),
        "missing": {f: refs[:MAX_LISTED] for f, refs in list(missing.items())[:MAX_LISTED]},
        "external_refs": external[:20],
    }
    return StageScore("structure", score, passed, details)


class StructureStage:
    name = "structure"

    def __init__(self, cfg: StructureConfig):
        self.cfg = cfg

    def __call__(self, site: SiteContext, deadline: float) -> StageScore:
        score = check_structure(site.root, self.cfg, deadline)
        site.unfinished = list(score.details.get("unfinished", []))
        return score
