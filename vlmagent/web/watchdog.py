"""Unsticking hung browser calls: find our Chromium in /proc, kill its renderers or itself, and
`Watchdog`, which does so when a guarded Playwright call overruns.

Linux only (/proc). Playwright's `evaluate`, viewport resizes and closes have no timeout of their
own; a page stuck in a script would hang them forever.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def browser_pid(marker: str) -> int | None:
    """The browser process launched with `--vlmagent-instance=<marker>` (not its children)."""
    flag = f"--vlmagent-instance={marker}".encode()
    for entry in os.listdir("/proc") if marker else ():
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if flag in argv and not any(a.startswith(b"--type=") for a in argv):
            return int(entry)
    return None


def kill(pid: int | None) -> None:
    try:
        if pid:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:  # field 4 of /proc/PID/stat is the parent; the name before it may hold spaces
            parents[int(entry)] = int(
                Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _cmdline_has(pid: int, flag: bytes) -> bool:
    try:
        return flag in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def driver_pid() -> int | None:
    """Playwright's driver (node) started by this process: a descendant running `run-driver`."""
    return next((p for p in _descendants(os.getpid()) if _cmdline_has(p, b"run-driver")), None)


def kill_group(pgid: int | None) -> None:
    """SIGKILL a process group: the browser's (Playwright starts it as a group leader), so its
    children die with it even after it is gone. Never our own group."""
    try:
        if pgid and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def kill_renderers(browser: int) -> None:
    """SIGKILL every renderer below `browser` (one site runs at a time, so all are its pages)."""
    for pid in _descendants(browser):
        if _cmdline_has(pid, b"--type=renderer"):
            kill(pid)


class Watchdog:
    """Bounds Playwright calls that have no timeout of their own (evaluate, resize, close).

    When a guarded call overruns, the renderers are killed (the page crashes and the call
    fails); if the call still hangs, the browser itself is killed and relaunched by its owner.
    If the browser is already gone, its process group is killed (orphans keep the pipe open).
    """

    def __init__(self, pid: Callable[[], int | None],
                 group: Callable[[], int | None] = lambda: None) -> None:
        self._pid = pid
        self._group = group  # the browser's process group, known from its launch
        self.fired = False  # set when a guard expired; the owner resets it per page
        self.killed_driver = False  # set when Playwright's driver had to go; the owner restarts it

    @contextmanager
    def guard(self, seconds: float) -> Iterator[None]:
        done = threading.Event()

        def watch() -> None:
            if done.wait(seconds):
                return
            self.fired = True
            browser = self._pid()
            if not browser:
                # the browser died under the call: end what it left behind; a call that still
                # waits (Playwright can miss a browser that vanished mid-command) is ended by
                # killing Playwright's driver, which the owner then restarts
                kill_group(self._group())
                if not done.wait(2.0):
                    self.killed_driver = True
                    kill(driver_pid())
                return
            kill_renderers(browser)
            if not done.wait(seconds + 2.0):
                kill(browser)
                kill_group(self._group())

        threading.Thread(target=watch, daemon=True).start()
        try:
            yield
        finally:
            done.set()
