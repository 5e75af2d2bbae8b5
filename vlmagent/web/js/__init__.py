"""The JavaScript run inside crawled pages, one snippet per `<name>.js` file (package data).

Each file holds one JavaScript expression, a function that `page.evaluate` calls (init.js: the
statement installed before any site script), preceded by `//` lines that document it. `load`
returns the expression alone, exactly as Playwright receives it.

    init          the context's init script: dialogs, popups, new tabs, mutation counting
    state         mutation count, document token, dialog/popup counters
    observe       what a loaded page shows (title, text, nodes, links, counts)
    mobile        horizontal overflow and document height at the current viewport
    candidates    visible clickables outside forms; click_target picks one of them
    fill, submit  fill a form with plausible values, then submit it
    measure       the aesthetics stage's DOM measures (vlmagent/rewards/aesthetics.py)
    tailwind_config  a `tailwind` global for v3 play-CDN configs (web/cdn.py, not evaluated)
"""
from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load(name: str) -> str:
    """The expression in `<name>.js` ("observe"), without its leading `//` comment lines."""
    lines = files(__name__).joinpath(f"{name}.js").read_text(encoding="utf-8").splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("//")):
        lines.pop(0)
    return "\n".join(lines).strip()
