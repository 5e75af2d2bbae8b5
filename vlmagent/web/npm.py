"""Where scripts/setup.sh installs a committed npm lock file: one read-only node_modules per
lock, shared by every checkout (the vite-react scaffold's, the CDN mirror's)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def lock_hash(folder: Path) -> str:
    """First 12 hex of sha256(folder/package-lock.json): the install's folder name."""
    return hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()[:12]


def installed(explicit: str, env_var: str, name: str, folder: Path) -> Path:
    """The node_modules to use: the configured path, then $env_var, then setup.sh's install,
    $VLMAGENT_CACHE/<name>-<lock hash>/node_modules."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    cache = Path(os.environ.get("VLMAGENT_CACHE") or Path.home() / ".cache" / "vlmagent")
    return cache / f"{name}-{lock_hash(folder)}" / "node_modules"
