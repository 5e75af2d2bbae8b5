"""Websites written by a model: the output format, its parser, scaffolds and the materialiser.

Output format (what `instructions()` asks a model for): the whole project in one response, each
file as a fenced code block whose info string names its relative path:

    ```tsx path=src/App.tsx
    export default function App() { return <h1>Hi</h1>; }
    ```

Accepted variants, because real models write them (first match wins, in this order):
  1. in the info string: `path=`, `file=`, `filename=`, `title=` or `name=` (quotes optional),
     `tsx:src/App.tsx`, or a bare path token (```src/App.tsx, ```tsx src/App.tsx);
  2. a header on the last non-blank line before the fence: `### File: src/App.tsx`,
     `**src/App.tsx**`, `` `src/App.tsx` ``, `Path: src/App.tsx`, `- src/App.tsx:`, or a
     sentence ending in a backquoted path (`Create `src/App.tsx`:`);
  3. a first line inside the block that is only a path comment (`// src/App.tsx`,
     `<!-- index.html -->`, `/* file: a.css */`); that line is dropped from the file.
Fences are ``` or ~~~ (three or more; closed by the same character, at least as long), so a
file may contain shorter fences. Blocks without a path are prose examples and are skipped, except
that a response whose only block is one unnamed block in the scaffold's language becomes the
scaffold's main file (index.html / src/App.tsx), as does a bare HTML document (static).

Rejected, each with a reason code (the structure stage fails with it in details; nothing
raises): empty_response, no_files, unterminated_fence (the output was cut off), absolute_path,
path_escapes (`..`), bad_path (backslashes, odd characters, too long or deep), reserved_path
(node_modules/, dist/, .git/, .vite-cache/: build inputs and outputs are never the model's),
duplicate_file, path_conflict (a file where a folder is needed), too_many_files, too_large,
binary_content (NUL or control characters, invalid UTF-8), missing_required_files.

Scaffolds (vlmagent/scaffolds/<name>/, scaffold.json + files; loaded by scaffold.py and
re-exported here): every shipped file is LOCKED.
A model that writes a locked file is not rejected: its version is ignored and the scaffold's is
used, recorded in the structure details (`ignored_files`) with the reason. Rejecting would make
an otherwise good site score zero for restating boilerplate, which models do all the time; the
file still cannot change, so nothing the build or browser runs comes from it.

This module imports nothing from vlmagent.rewards: the reward of a response (parse, materialise,
cascade) is rewards/response.py.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmagent.config import WebgenConfig
from vlmagent.types import StageScore
from vlmagent.web.scaffold import SCAFFOLD_ROOT, Scaffold, load_scaffold, scaffold_names

__all__ = ["SCAFFOLD_ROOT", "Prepared", "Rejected", "Scaffold", "instructions", "load_scaffold",
           "materialise", "normalise_path", "parse_response", "prepare", "rejection_stage",
           "response_hash", "scaffold_names"]

RESERVED = {"node_modules", "dist", ".git", ".vite-cache", "scaffold.json"}
MAX_PATH_CHARS, MAX_DEPTH = 200, 10
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_INFO_KV = re.compile(r"""\b(?:path|file|filename|title|name)\s*[=:]\s*
    (?:"([^"]*)"|'([^']*)'|([^\s"']+))""", re.I | re.X)
_HEADER = re.compile(r"""^\s*(?:[-*+]\s+|\d+[.)]\s+)?(?:\#{1,6}\s*)?(?:\*\*|__)?\s*
    (?:(?:file|path|filename)\s*:?\s*)?(?:\*\*|__)?\s*[`'"]?(?P<p>[^\s`'"*]+?)[`'"]?\s*
    (?:\*\*|__)?\s*:?\s*$""", re.I | re.X)
_TAIL_PATH = re.compile(r"`(?P<p>[^`\s]+)`\s*:?\s*$")  # "Create `src/App.tsx`:"
_COMMENT = re.compile(r"""^\s*(?://|\#|/\*|<!--)\s*(?:(?:file|filename|path)\s*:\s*)?
    (?P<p>[^\s*]+?)\s*(?:\*/|-->)?\s*$""", re.I | re.X)
_PATHLIKE = re.compile(r"^[\w.@+/-]*\.[A-Za-z0-9]{1,10}$|^[\w.@+-]+(?:/[\w.@+-]+)+$")
_SEGMENT = re.compile(r"[A-Za-z0-9_.@+-]{1,100}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class Rejected(Exception):
    """A response that cannot become a project. Internal: prepare() turns it into a result."""

    def __init__(self, reason: str, problem: str, file: str | None = None):
        super().__init__(problem)
        self.reason, self.problem, self.file = reason, problem, file


@dataclass
class Prepared:
    """A response turned into a project folder (root), or the reason it could not be (problem)."""

    root: Path | None
    files: list[str] = field(default_factory=list)  # what the model wrote, in response order
    ignored: list[dict[str, str]] = field(default_factory=list)  # locked files it also wrote
    problem: dict[str, Any] | None = None


def instructions(scaffold: Scaffold) -> str:
    """The paragraph a prompt needs so a model writes output that parse_response() reads."""
    return (f"{scaffold.description}\nWrite every file as a fenced code block whose info string "
            "gives its path relative to the project root, for example:\n```tsx path=src/App.tsx\n"
            "...\n```\nRequired: " + ", ".join(scaffold.required) + ". Fixed (do not write): "
            + ", ".join(scaffold.locked) + ".")


# ---------------------------------------------------------------- parsing
def normalise_path(raw: str) -> str:
    """A safe relative POSIX path, or Rejected with the reason it is not."""
    p = raw.strip().strip("`'\"")
    if not p or _CTRL.search(p):
        raise Rejected("bad_path", f"unusable file path {raw[:80]!r}", raw[:80])
    if p.startswith(("/", "~")) or _DRIVE.match(p):
        raise Rejected("absolute_path", f"absolute file path {p[:80]!r}", p[:80])
    if "\\" in p:
        raise Rejected("bad_path", f"backslash in file path {p[:80]!r}", p[:80])
    parts = [s for s in p.split("/") if s not in ("", ".")]
    if ".." in parts:
        raise Rejected("path_escapes", f"file path leaves the project: {p[:80]!r}", p[:80])
    if (not parts or len(p) > MAX_PATH_CHARS or len(parts) > MAX_DEPTH
            or not all(_SEGMENT.fullmatch(s) for s in parts)):
        raise Rejected("bad_path", f"unusable file path {p[:80]!r} (letters, digits, ._-@+ only;"
                       f" at most {MAX_DEPTH} levels)", p[:80])
    if parts[0] in RESERVED:
        raise Rejected("reserved_path", f"{parts[0]}/ is not the model's to write ({p[:80]!r})",
                       p[:80])
    return "/".join(parts)


def _info_path(info: str) -> str | None:
    m = _INFO_KV.search(info)
    if m:
        return next(g for g in m.groups() if g is not None)
    for tok in info.split():
        if ":" in tok and not _PATHLIKE.match(tok):  # tsx:src/App.tsx
            tok = tok.split(":", 1)[1]
        if _PATHLIKE.match(tok) or tok.startswith(("/", "..", "~")):
            return tok
    return None


def _header_path(line: str) -> str | None:
    m = _HEADER.match(line) or _TAIL_PATH.search(line)
    if m and (_PATHLIKE.match(m["p"]) or m["p"].startswith(("/", "../", "~"))):
        return m["p"]
    return None


def parse_response(text: str, limits: WebgenConfig
                   ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(named files in response order, unnamed blocks as (language, body)); Rejected if bad."""
    if not isinstance(text, str) or not text.strip():
        raise Rejected("empty_response", "the response is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Rejected("binary_content", "the response is not valid UTF-8 text") from None
    if size > 2 * limits.max_total_bytes:
        raise Rejected("too_large", f"the response is {size} bytes (limit "
                       f"{2 * limits.max_total_bytes}: twice webgen.max_total_bytes)")
    if "\x00" in text:
        raise Rejected("binary_content", "the response contains NUL bytes")
    lines = text.split("\n")
    files: dict[str, str] = {}
    unnamed: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or (m[1][0] == "`" and "`" in m[2]):
            i += 1
            continue
        fence, info, start = m[1], m[2].strip(), i
        j = i + 1
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise Rejected("unterminated_fence", f"code block opened on line {start + 1} is never"
                           " closed (was the output cut off?)")
        body = lines[i + 1:j]
        raw = _info_path(info)
        if raw is None:
            prev = next((ln for ln in reversed(lines[max(0, start - 3):start]) if ln.strip()), "")
            raw = _header_path(prev)
        if raw is None and body:
            c = _COMMENT.match(body[0])
            if c and _PATHLIKE.match(c["p"]) and "." in c["p"].rsplit("/", 1)[-1]:
                raw, body = c["p"], body[1:]
        content = "\n".join(body) + ("\n" if body else "")
        if raw is None:
            unnamed.append((info.split()[0].lower() if info else "", content))
        else:
            path = normalise_path(raw)
            if path in files:
                raise Rejected("duplicate_file", f"{path} is written twice", path)
            files[path] = content
        i = j + 1
    return files, unnamed


def _check_files(files: dict[str, str], limits: WebgenConfig) -> None:
    if len(files) > limits.max_files:
        raise Rejected("too_many_files", f"{len(files)} files (limit {limits.max_files})")
    total = 0
    for path, content in files.items():
        if _CTRL.search(content):
            raise Rejected("binary_content", f"{path} contains control characters (binary?)",
                           path)
        total += len(content.encode("utf-8"))
    if total > limits.max_total_bytes:
        raise Rejected("too_large", f"{total} bytes of files (limit {limits.max_total_bytes})")
    dirs = {"/".join(p.split("/")[:k]) for p in files for k in range(1, p.count("/") + 1)}
    for path in files:
        if path in dirs:
            raise Rejected("path_conflict", f"{path} is both a file and a folder", path)


def _lone_block(text: str, unnamed: list[tuple[str, str]], scaffold: Scaffold) -> dict[str, str]:
    """The scaffold's main file from an answer without paths (one block, or a bare HTML page)."""
    if len(unnamed) == 1 and scaffold.lone_path and unnamed[0][0] in scaffold.lone_languages:
        return {scaffold.lone_path: unnamed[0][1]}
    head = text.lstrip()[:15].lower()
    if not unnamed and scaffold.lone_path.endswith(".html") and head.startswith(("<!doctype",
                                                                                "<html")):
        return {scaffold.lone_path: text.strip() + "\n"}
    return {}


# ---------------------------------------------------------------- materialising
def materialise(files: dict[str, str], scaffold: Scaffold, dest: Path) -> list[dict[str, str]]:
    """Write the scaffold, then the model's files, into the new folder dest; returns the ignored.

    Paths were checked by normalise_path and dest is new, so nothing here can write outside it;
    O_EXCL and O_NOFOLLOW make that hold even if the folder were tampered with meanwhile.
    """
    dest.mkdir(parents=True)
    ignored = []
    todo = dict(scaffold.locked)
    for path, content in files.items():
        if path in scaffold.locked:
            same = content.encode("utf-8") == scaffold.locked[path]
            ignored.append({"file": path, "reason": "locked scaffold file; the scaffold's version"
                            " is used" + (" (the model's copy was identical)" if same else "")})
        else:
            todo[path] = content.encode("utf-8")
    for path, data in todo.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return ignored


def prepare(text: Any, scaffold: Scaffold, dest: Path, limits: WebgenConfig) -> Prepared:
    """Parse a response and materialise it at dest (replaced if present). Never raises for bad
    model output: a rejection comes back as Prepared.problem and leaves no folder behind."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
    try:
        files, unnamed = parse_response(text, limits)
        if not files:
            files = _lone_block(text, unnamed, scaffold)
        if not files:
            raise Rejected("no_files", "no file blocks found (write each file as a fenced block "
                           "with its path, e.g. ```html path=index.html)"
                           + (f"; {len(unnamed)} blocks without a path" if unnamed else ""))
        _check_files(files, limits)
        missing = [r for r in scaffold.required if r not in files]
        if missing:
            return Prepared(None, list(files), problem={
                "reason": "missing_required_files",
                "problem": "required files missing: " + ", ".join(missing),
                "failures": [{"file": m, "problem": "required file missing"} for m in missing]})
        ignored = materialise(files, scaffold, dest)
    except Rejected as e:
        return Prepared(None, problem={"reason": e.reason, "problem": e.problem, "failures": [
            {"file": e.file or "(response)", "problem": e.problem}]})
    return Prepared(dest, list(files), ignored)


def response_hash(text: Any) -> str:
    """Content hash of a response that never became a project (64 hex, like site_hash)."""
    data = str(text).encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"vlmagent-response-v1\0" + data).hexdigest()


# ---------------------------------------------------------------- rejections
def rejection_stage(prep: Prepared) -> StageScore:
    """The structure-stage failure a rejected response gets (score 0: it is not a site)."""
    p = prep.problem or {}
    return StageScore("structure", 0.0, False, {
        "reason": p.get("reason"), "problem": p.get("problem"),
        "failures": p.get("failures", []), "n_failures": len(p.get("failures", [])),
        "files": len(prep.files)})
