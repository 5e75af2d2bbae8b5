"""Stage "build": turn a scaffold project (vite-react) into the static site the browser visits.

Runs between structure and execution. A site without package.json + vite.config.js is static:
nothing to build, the stage passes with `skipped` in details. For a project:
  1. every locked scaffold file must be byte-identical to the scaffold's (the config is the one
     piece of a project that runs as code at build time, so only ours may run);
  2. the source is copied to <artifacts>/build/project (the scored folder is never written to)
     and node_modules there is a symlink to the ONE shared install made by scripts/setup.sh
     (read-only, keyed by the lock file hash);
  3. `vite build` runs in its own process group with a bounded time (the earlier of
     webgen.build_timeout_s and the cascade's deadline; on expiry the whole group is killed) and
     bounded output (only the last webgen.build_log_bytes are kept);
  4. on success site.root becomes .../project/dist, so execution and later stages see the build.
Why node directly and not `npm run build` (which runs the same vite command): the build process
itself is what must be confined. On Node >= 20 it runs under Node's permission model, reading
only the project and node_modules and writing only the project, so a generated import or CSS
url() of a host file (`../../../etc/passwd`) fails the build instead of landing in the site.
Older Node has no permission model: there a scan rejects source references that climb out of
the project (best effort; `details.fs_sandbox` says which guard ran). No network is needed:
nothing is installed at score time, and npm, if anything calls it, is pointed offline.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vlmagent.config import WebgenConfig
from vlmagent.rewards.cascade import SiteContext
from vlmagent.types import StageScore
from vlmagent.web import npm
from vlmagent.web.scaffold import SCAFFOLD_ROOT, load_scaffold

SCAFFOLD = SCAFFOLD_ROOT / "vite-react"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Fallback guard only (old Node): `../` runs, Vite's /@fs/ and file: URLs, escaped dots, and
# absolute paths into the usual top-level host folders. The permission model needs none of it.
_CLIMB = re.compile(r"(?:\.\./)+|/@fs/|(?<!\w)file:|\\0*2e|\\x2e|\\u0*2e|\\u\{0*2e\}|"
                    r"""["'(]\s*/(?:etc|proc|sys|dev|root|home|usr|var|tmp|opt|srv|mnt|run|boot|"""
                    r"lib\w*|s?bin|work)/", re.I)
_SCANNED = {".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".css", ".html", ".json", ".svg"}


def node_modules_path(cfg: WebgenConfig) -> Path:
    """Config, then $VLMAGENT_NODE_MODULES, then where scripts/setup.sh installs them."""
    return npm.installed(cfg.node_modules, "VLMAGENT_NODE_MODULES", "node-vite-react", SCAFFOLD)


@functools.lru_cache(maxsize=8)
def permission_flag(node: str) -> str | None:
    """The flag that turns on Node's permission model here (it was renamed in Node 22)."""
    for flag in ("--permission", "--experimental-permission"):
        try:
            r = subprocess.run([node, flag, "--no-warnings", "-e", "0"], capture_output=True,
                               timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode == 0:
            return flag
    return None


def escaping_refs(project: Path, skip: frozenset[str] = frozenset()) -> list[str]:
    """Source files holding a reference that climbs above the project (fallback guard); `skip`:
    the locked scaffold files, already checked to be ours."""
    found = []
    for p in sorted(project.rglob("*")):
        rel = p.relative_to(project)
        if (p.suffix.lower() not in _SCANNED or not p.is_file() or "node_modules" in p.parts
                or rel.as_posix() in skip):
            continue
        text = p.read_text("utf-8", errors="replace")
        for m in _CLIMB.finditer(text):
            s = m.group(0)
            if not s.startswith("../") or s.count("../") > len(rel.parts) - 1:
                found.append(f"{rel.as_posix()}: {s[:40]!r}")
                break
    return found


def run_bounded(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float,
                log_bytes: int) -> tuple[int | None, str, int, float]:
    """(exit code or None on timeout, last log_bytes of output, total output bytes, seconds).

    Own session, so a timeout kills the whole group (esbuild's service process too); output is
    read as it comes and only its tail is kept, so a chatty build cannot fill memory.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tail, total = bytearray(), [0]

    def pump() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            total[0] += len(chunk)
            tail.extend(chunk)
            del tail[:-log_bytes]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        code = None
    try:  # also on success: a stray child left in the group (an esbuild service) goes too
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    reader.join(5)
    text = _ANSI.sub("", tail.decode("utf-8", errors="replace"))
    return code, text, total[0], time.monotonic() - t0


class BuildStage:
    name = "build"

    def __init__(self, cfg: WebgenConfig, scaffold: str = "vite-react"):
        self.cfg = cfg
        self.locked = load_scaffold(scaffold).locked  # the same files the parser protects

    def _fail(self, problem: str, **details: Any) -> StageScore:
        return StageScore(self.name, 0.0, False, {"problem": problem, **details})

    def __call__(self, site: SiteContext, deadline: float) -> StageScore:
        src = Path(site.root)
        if not ((src / "package.json").is_file() and (src / "vite.config.js").is_file()):
            return StageScore(self.name, 1.0, True,
                              {"skipped": "no package.json + vite.config.js: a static site"})
        changed = [p for p, data in self.locked.items()
                   if not (src / p).is_file() or (src / p).is_symlink()
                   or (src / p).read_bytes() != data]
        if changed:
            return self._fail("locked scaffold files differ from the scaffold: "
                              + ", ".join(changed), changed=changed)
        node = shutil.which(self.cfg.node or "node")
        modules = node_modules_path(self.cfg)
        if node is None:
            return self._fail(f"node not found ({self.cfg.node or 'node'}); run scripts/setup.sh")
        if not (modules / "vite" / "bin" / "vite.js").is_file():
            return self._fail(f"vite is not installed in {modules}; run scripts/setup.sh")
        work = (Path(site.artifacts) if site.artifacts else Path(tempfile.mkdtemp(
            prefix="vlmagent-build-"))) / "build"
        project = work / "project"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, project, symlinks=True,
                        ignore=shutil.ignore_patterns("node_modules", "dist", ".vite-cache"))
        flag = permission_flag(node)
        guard = "node-permission" if flag else "source-scan"
        if flag is None and (bad := escaping_refs(project, frozenset(self.locked))):
            return self._fail("references outside the project: " + "; ".join(bad[:5]),
                              fs_sandbox=guard)
        (project / "node_modules").symlink_to(modules.resolve(), target_is_directory=True)
        real, real_mods = os.path.realpath(project), os.path.realpath(modules)
        sandbox = [flag, f"--allow-fs-read={real}", f"--allow-fs-read={real_mods}",
                   f"--allow-fs-write={real}", "--allow-child-process", "--allow-worker",
                   "--allow-addons"] if flag else []
        cmd = [node, "--no-warnings", *sandbox, os.path.join(real_mods, "vite", "bin", "vite.js"),
               "build", "--configLoader", "native"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
               "NODE_ENV": "production", "NO_COLOR": "1", "CI": "1", "npm_config_offline": "true",
               "npm_config_registry": "http://127.0.0.1:9/", "npm_config_update_notifier": "false",
               "BROWSERSLIST_IGNORE_OLD_DATA": "1"}
        budget = min(self.cfg.build_timeout_s, deadline - time.monotonic())
        code, log, n_bytes, secs = run_bounded(cmd, project, env, budget,
                                               self.cfg.build_log_bytes)
        (project / "node_modules").unlink()  # the folder keeps no link out of itself
        log = log.replace(real + os.sep, "").replace(real_mods + os.sep, "node_modules/")
        details: dict[str, Any] = {"seconds": round(secs, 3), "exit_code": code,
                                   "log": log.strip(), "log_bytes": n_bytes, "fs_sandbox": guard,
                                   "output": site.link(project / "dist")}
        index = project / "dist" / "index.html"
        if code is None:
            return self._fail(f"build timed out after {budget:.1f} s; its processes were killed",
                              **details)
        if code != 0 or not index.is_file():
            return self._fail(f"build failed (exit code {code})" if code else
                              "build wrote no dist/index.html", **details)
        built = [p for p in (project / "dist").rglob("*") if p.is_file()]
        details.update(files=len(built), bytes=sum(p.stat().st_size for p in built))
        site.root = project / "dist"
        return StageScore(self.name, 1.0, True, details)
