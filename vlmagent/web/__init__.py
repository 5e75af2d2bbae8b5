"""The sandboxed website scorer's browser side: the loopback site server (siteserver.py), the
Chromium lifecycle and sandbox (browser.py), page driving (crawl.py) with its per-site state
(run.py), in-page scripts (js/) and hung-call watchdog (watchdog.py), plus generated sites
(sitegen.py) and the scaffolded web-generation domain (webgen.py)."""
