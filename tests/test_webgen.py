"""Model responses as websites: the output parser, scaffolds, the vite build stage and
`vlmagent score --from-responses`. Real node + vite (the shared install from scripts/setup.sh)
and real Chromium; nothing is downloaded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmagent.cli import main
from vlmagent.config import Config, ExecutionConfig, StructureConfig, WebgenConfig
from vlmagent.rewards.build import BuildStage, node_modules_path
from vlmagent.rewards.cascade import Cascade, SiteContext
from vlmagent.rewards.execution import ExecutionStage
from vlmagent.rewards.response import score_response
from vlmagent.rewards.structure import StructureStage
from vlmagent.web import webgen

LIMITS = WebgenConfig(max_files=5, max_total_bytes=2000)
REPO = Path(__file__).resolve().parents[1]
REAP_S = 3.0  # after a build's time limit: SIGKILL of its process group, reaping, the log's end
STATIC = webgen.load_scaffold("static")
VITE = webgen.load_scaffold("vite-react")
HAVE_VITE = shutil.which("node") is not None and (
    node_modules_path(WebgenConfig()) / "vite" / "bin" / "vite.js").is_file()
needs_vite = pytest.mark.skipif(not HAVE_VITE, reason="node or the scaffold's node_modules "
                                "missing: run scripts/setup.sh")

GOOD_APP = """\
```tsx path=src/App.tsx
import { useState } from "react";
import "./App.css";

export default function App() {
  const [n, setN] = useState(0);
  return (
    <main>
      <h1>Built by Vite</h1>
      <p>A small page rendered by React after a real build.</p>
      <button id="inc" onClick={() => setN(n + 1)}>Clicked {n} times</button>
    </main>
  );
}
```
```css path=src/App.css
body { font-family: sans-serif; margin: 2rem; color: #1d2733; background: #f6f7f9; }
```
"""
BROKEN_APP = "```tsx path=src/App.tsx\nexport default function App() {\n  return <main><h1>" \
    "oops</main>;\n}\n```\n"


def fence(path: str, body: str, lang: str = "html") -> str:
    return f"```{lang} path={path}\n{body}\n```\n"


def reason(text: object, scaffold=STATIC, tmp: Path | None = None, limits=LIMITS) -> str | None:
    dest = (tmp or Path("/nonexistent-never-written")) / "p"
    prep = webgen.prepare(text, scaffold, dest, limits)
    if prep.problem is None:
        return None
    assert prep.root is None and not dest.exists()  # a rejection leaves nothing behind
    assert prep.problem["failures"] and prep.problem["problem"]
    return prep.problem["reason"]


# ---------------------------------------------------------------- parser: every rejection
@pytest.mark.parametrize("text, want", [
    ("", "empty_response"),
    ("   \n\t\n", "empty_response"),
    (None, "empty_response"),
    ("Sure! I would build a nice site.", "no_files"),
    ("```js\nconsole.log(1)\n```\n```css\np{}\n```", "no_files"),  # unnamed, not a lone page
    ("```html path=index.html\n<h1>cut off", "unterminated_fence"),
    (fence("../index.html", "<h1>x</h1>"), "path_escapes"),
    (fence("a/../../etc/x.html", "<h1>x</h1>"), "path_escapes"),
    (fence("/etc/passwd", "x"), "absolute_path"),
    ("### File: /etc/passwd\n```\nx\n```", "absolute_path"),
    (fence("C:/x/index.html", "x"), "absolute_path"),
    (fence("~/index.html", "x"), "absolute_path"),
    (fence("a\\b.html", "x"), "bad_path"),
    ('```html path="a b$.html"\nx\n```', "bad_path"),
    (fence("/".join(["d"] * 11) + "/x.html", "x"), "bad_path"),
    (fence("node_modules/react/index.js", "x", "js"), "reserved_path"),
    (fence("dist/index.html", "x"), "reserved_path"),
    (fence("index.html", "<h1>a</h1>") + fence("./index.html", "<h1>b</h1>"), "duplicate_file"),
    (fence("index.html", "x") + fence("index.html/a.css", "x", "css"), "path_conflict"),
    ("".join(fence(f"p{i}.html", "x") for i in range(6)), "too_many_files"),
    (fence("index.html", "x" * 2100), "too_large"),
    ("x" * 4001, "too_large"),
    (fence("index.html", "<h1>a\x00b</h1>"), "binary_content"),
    (fence("index.html", "<h1>\x01\x02\x03</h1>"), "binary_content"),
    (fence("index.html", "<h1>\ud800</h1>"), "binary_content"),  # lone surrogate from JSON
    (fence("about.html", "<h1>no index</h1>"), "missing_required_files"),
])
def test_rejections_name_their_reason(text, want):
    assert reason(text) == want


def test_missing_required_names_the_files(tmp_path):
    prep = webgen.prepare(fence("src/Other.tsx", "export {}", "tsx"), VITE, tmp_path / "p",
                          LIMITS)
    assert prep.problem["reason"] == "missing_required_files"
    assert prep.problem["failures"] == [{"file": "src/App.tsx",
                                         "problem": "required file missing"}]
    stage = webgen.rejection_stage(prep)
    assert (stage.name, stage.score, stage.passed) == ("structure", 0.0, False)
    assert stage.details["reason"] == "missing_required_files" and stage.details["files"] == 1


# ---------------------------------------------------------------- parser: accepted variants
@pytest.mark.parametrize("text, files", [
    ('```html path="index.html"\n<h1>a</h1>\n```', {"index.html": "<h1>a</h1>\n"}),
    ("```tsx:src/App.tsx\nA\n```", {"src/App.tsx": "A\n"}),
    ("```src/App.tsx\nA\n```\n```tsx src/b.tsx\nB\n```", {"src/App.tsx": "A\n",
                                                           "src/b.tsx": "B\n"}),
    ("```css title=a.css\np{}\n```", {"a.css": "p{}\n"}),
    ("### File: index.html\n```html\nA\n```\n**style.css**\n\n```css\nB\n```\n"
     "`app.js`\n```js\nC\n```\n2. src/x.ts:\n```ts\nD\n```\nCreate `js/e.js`:\n```js\nE\n```",
     {"index.html": "A\n", "style.css": "B\n", "app.js": "C\n", "src/x.ts": "D\n",
      "js/e.js": "E\n"}),
    ("```html\n<!-- index.html -->\n<!doctype html>\n```\n```js\n// File: js/m.js\nlet a\n```",
     {"index.html": "<!doctype html>\n", "js/m.js": "let a\n"}),
    ("````md path=README.md\n```\ninner\n```\n````", {"README.md": "```\ninner\n```\n"}),
    ("~~~html path=./pages//a.html\n```\n~~~", {"pages/a.html": "```\n"}),
    ("Intro prose.\n```bash\nnpm run build\n```\n" + fence("index.html", "X"),
     {"index.html": "X\n"}),  # an unnamed example block is skipped, not a file
])
def test_parser_accepts_what_models_write(text, files):
    got, _ = webgen.parse_response(text, WebgenConfig())
    assert got == files


def test_lone_unnamed_block_or_bare_page_is_the_main_file(tmp_path):
    prep = webgen.prepare("Here you go:\n```html\n<h1>Hi</h1>\n```\n", STATIC, tmp_path / "a",
                          LIMITS)
    assert prep.files == ["index.html"] and (tmp_path / "a/index.html").read_text() == \
        "<h1>Hi</h1>\n"
    prep = webgen.prepare("<!DOCTYPE html><h1>Bare</h1>", STATIC, tmp_path / "b", LIMITS)
    assert (tmp_path / "b/index.html").read_text() == "<!DOCTYPE html><h1>Bare</h1>\n"
    prep = webgen.prepare("```jsx\nexport default () => <p/>;\n```", VITE, tmp_path / "c",
                          WebgenConfig())
    assert prep.files == ["src/App.tsx"] and prep.problem is None


# ---------------------------------------------------------------- scaffolds
def test_static_good_path_and_locked_file_is_ignored_with_reason(tmp_path):
    text = (fence("index.html", '<!doctype html><link rel="stylesheet" href="assets/base.css">'
                  '<link rel="stylesheet" href="css/site.css"><h1>Home</h1>'
                  '<a href="about.html">About</a>')
            + fence("about.html", "<h1>About</h1>") + fence("css/site.css", "h1{color:red}", "css")
            + fence("assets/base.css", "* { display: none }", "css"))
    prep = webgen.prepare(text, STATIC, tmp_path / "p", WebgenConfig())
    assert prep.problem is None and prep.root == tmp_path / "p"
    assert prep.files == ["index.html", "about.html", "css/site.css", "assets/base.css"]
    assert sorted(p.relative_to(prep.root).as_posix() for p in prep.root.rglob("*.*")) == [
        "about.html", "assets/base.css", "css/site.css", "index.html"]
    # the locked reset stays the scaffold's; the model's attempt is recorded, not fatal
    assert (prep.root / "assets/base.css").read_bytes() == STATIC.locked["assets/base.css"]
    assert prep.ignored == [{"file": "assets/base.css", "reason": "locked scaffold file; the "
                             "scaffold's version is used"}]
    s = StructureStage(StructureConfig())(SiteContext.from_dir(prep.root), time.monotonic() + 10)
    assert s.passed and s.details["refs"]["resolved"] == 3


def test_vite_react_good_path_keeps_every_locked_file(tmp_path):
    text = GOOD_APP + fence("package.json", '{"scripts": {"build": "rm -rf /"}}', "json") + \
        fence("src/main.tsx", "import App from './App';", "tsx")
    prep = webgen.prepare(text, VITE, tmp_path / "p", WebgenConfig())
    assert prep.problem is None
    for rel, data in VITE.locked.items():
        assert (prep.root / rel).read_bytes() == data, rel
    assert [d["file"] for d in prep.ignored] == ["package.json", "src/main.tsx"]
    assert not (prep.root / "scaffold.json").exists() and not (prep.root / "node_modules").exists()
    assert "src/App.tsx" in webgen.instructions(VITE) and "vite.config.js" in \
        webgen.instructions(VITE)


def test_unknown_scaffold_lists_valid_ones():
    with pytest.raises(ValueError, match="static, vite-react"):
        webgen.load_scaffold("next")


def test_the_parser_does_not_import_the_rewards():
    """web/webgen.py and web/scaffold.py stand alone; rewards (build, response) import them."""
    code = ("import sys, vlmagent.web.webgen, vlmagent.web.scaffold; "
            "print(sorted(m for m in sys.modules if m.startswith('vlmagent.rewards')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_score_response_in_process(tmp_path):
    cascade = Cascade([StructureStage(StructureConfig())])
    bad = score_response("no code here", STATIC, cascade, tmp_path / "bad", LIMITS)
    assert [(s.name, s.passed) for s in bad.stages] == [("structure", False)]
    assert bad.stages[0].details["reason"] == "no_files" and bad.reward == 0.0
    assert bad.content_hash == webgen.response_hash("no code here")
    text = fence("index.html", "<h1>Hi</h1>") + fence("assets/base.css", "* {}", "css")
    ok = score_response(text, STATIC, cascade, tmp_path / "ok", LIMITS)
    assert ok.stages[0].passed and ok.reward == 1.0
    assert [f["file"] for f in ok.stages[0].details["ignored_files"]] == ["assets/base.css"]
    assert (tmp_path / "ok/project/assets/base.css").read_bytes() == \
        STATIC.locked["assets/base.css"]  # the scaffold's copy, not the model's


# ---------------------------------------------------------------- build stage
def _project(tmp_path: Path, text: str) -> SiteContext:
    prep = webgen.prepare(text, VITE, tmp_path / "project", WebgenConfig())
    assert prep.problem is None, prep.problem
    return SiteContext.from_dir(prep.root, artifacts=tmp_path / "artifacts",
                                link_base=tmp_path)


def test_static_site_needs_no_build(tmp_path):
    (tmp_path / "index.html").write_text("<h1>x</h1>")
    s = BuildStage(WebgenConfig())(SiteContext.from_dir(tmp_path), time.monotonic() + 5)
    assert s.passed and s.score == 1.0 and "skipped" in s.details


def test_changed_locked_file_fails_the_build_without_running_it(tmp_path):
    site = _project(tmp_path, GOOD_APP)
    (site.root / "vite.config.js").write_text("import('child_process').then(c => c.exec('x'))")
    s = BuildStage(WebgenConfig())(site, time.monotonic() + 30)
    assert not s.passed and s.details["changed"] == ["vite.config.js"]
    assert not (tmp_path / "artifacts").exists()


@needs_vite
def test_failed_build_fails_the_stage_with_the_log_and_gates(tmp_path):
    site = _project(tmp_path, BROKEN_APP)
    cfg = WebgenConfig()
    cascade = Cascade([StructureStage(StructureConfig()), BuildStage(cfg),
                       ExecutionStage(None, ExecutionConfig())])  # never reached: gated
    r = cascade(site)
    assert [(s.name, s.passed) for s in r.stages] == [("structure", True), ("build", False)]
    b = r.stages[1].details
    # vite itself said no (an exit code), before the build's time limit could
    assert b["exit_code"] not in (0, None) and "build failed" in b["problem"]
    assert b["seconds"] < cfg.build_timeout_s
    assert "src/App.tsx" in b["log"] and "/project/" not in b["log"]  # relative paths only
    assert 0 < len(b["log"]) <= WebgenConfig().build_log_bytes
    assert 1 / 4 <= r.reward < 2 / 4  # passed 1 of 3 stages: the band below every build
    assert not (tmp_path / "artifacts/build/project/node_modules").exists()


@needs_vite
def test_build_timeout_kills_the_process_group(tmp_path):
    site = _project(tmp_path, GOOD_APP)
    cfg = WebgenConfig(build_timeout_s=0.3)  # far shorter than a build
    s = BuildStage(cfg)(site, time.monotonic() + 60)
    assert not s.passed and s.details["exit_code"] is None
    # waited its whole limit, then the group's SIGKILL ended it (not the 60 s deadline)
    assert cfg.build_timeout_s <= s.details["seconds"] < cfg.build_timeout_s + REAP_S
    assert "timed out after 0.3 s" in s.details["problem"]
    mine = [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in mine:  # no vite or esbuild left running from that build
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(tmp_path).encode() not in cmd or b"pytest" in cmd


@needs_vite
def test_build_cannot_read_host_files(tmp_path):
    hostile = GOOD_APP.replace('import "./App.css";', 'import "./App.css";\nimport s from '
                               '"../../../../../../../../etc/hostname?raw";\nconsole.log(s);')
    site = _project(tmp_path, hostile + fence("src/x.css", "body{background:url("
                                              "'../../../../../../../../etc/hostname')}", "css"))
    s = BuildStage(WebgenConfig())(site, time.monotonic() + 60)
    assert not s.passed
    host = Path("/etc/hostname").read_text().strip()
    dist = tmp_path / "artifacts/build/project/dist"
    blob = b"".join(p.read_bytes() for p in dist.rglob("*") if p.is_file()) if dist.exists() \
        else b""
    assert host.encode() not in blob
    assert "outside" in s.details["problem"] or "ERR_ACCESS_DENIED" in s.details.get("log", "") \
        or "Could not resolve" in s.details.get("log", ""), s.details


def test_without_node_permissions_a_scan_refuses_escaping_references(tmp_path, monkeypatch):
    import vlmagent.rewards.build as build

    monkeypatch.setattr(build, "permission_flag", lambda node: None)  # as on Node 18
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/node")
    cfg = WebgenConfig(node_modules=str(tmp_path / "nm"))
    (tmp_path / "nm/vite/bin").mkdir(parents=True)
    (tmp_path / "nm/vite/bin/vite.js").write_text("")
    for bad in ['import s from "../../etc/hostname?raw";', "import s from '/@fs/etc/x';",
                'const u = new URL("file:///etc/passwd");', 'import s from "/etc/hostname";']:
        site = _project(tmp_path / str(abs(hash(bad))), GOOD_APP + fence("src/x.ts", bad, "ts"))
        st = build.BuildStage(cfg)(site, time.monotonic() + 30)
        assert not st.passed and st.details["fs_sandbox"] == "source-scan", bad
        assert "src/x.ts" in st.details["problem"]
    ok = _project(tmp_path / "ok", GOOD_APP + fence("src/c/y.ts", 'import a from "../App";', "ts"))
    assert build.escaping_refs(ok.root, frozenset(VITE.locked)) == []


@needs_vite
@pytest.mark.browser
def test_vite_build_then_chromium_sees_the_built_page(tmp_path):
    from vlmagent.web.browser import Browser

    cfg = Config()
    with Browser(cfg.browser) as browser:
        cascade = Cascade([StructureStage(StructureConfig()), BuildStage(WebgenConfig()),
                           ExecutionStage(browser, ExecutionConfig())])
        r = score_response(GOOD_APP, VITE, cascade, tmp_path, WebgenConfig())
    assert [(s.name, s.passed) for s in r.stages] == [("structure", True), ("build", True),
                                                      ("execution", True)], r.stages
    b, e = r.stages[1].details, r.stages[2].details
    assert b["exit_code"] == 0 and b["files"] == 3  # index.html, one js and one css bundle
    assert b["fs_sandbox"] in ("node-permission", "source-scan")
    index = e["pages"][0]
    assert index["status"] == 200 and index["blank"] is False and not index["page_errors"]
    assert index["visible_text_chars"] > 40  # the React tree rendered, not the empty #root
    assert e["interactions"]["changed"] >= 1  # the counter button re-rendered
    assert r.reward > 3 / 4


# ---------------------------------------------------------------- the CLI
@needs_vite
@pytest.mark.browser
def test_score_from_responses_end_to_end(tmp_path, capsys):
    rows = [{"id": "good", "text": GOOD_APP},
            {"id": "locked", "text": GOOD_APP + fence("vite.config.js", "export default {}", "js")},
            {"id": "broken", "text": BROKEN_APP},
            {"id": "../../hostile", "text": fence("../../../etc/cron.d/x", "* * * * * root x",
                                                  "sh") + GOOD_APP},
            {"id": 7, "text": GOOD_APP.replace("```tsx path=src/App.tsx", "```tsx")[:200]}]
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "results.jsonl"
    args = ["score", "--from-responses", str(src), "--scaffold", "vite-react", "--out", str(out),
            "--workers", "1", "-q", "browser.max_pages=2", "browser.site_budget_s=20",
            "reward.stages=[structure,execution]"]  # build is inserted: the scaffold needs it
    assert main(args) == 0
    by = {d["id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert sorted(by) == ["../../hostile", "7", "broken", "good", "locked"]
    stages = {k: [(s["name"], s["passed"]) for s in d["stages"]] for k, d in by.items()}
    assert stages["good"] == [("structure", True), ("build", True), ("execution", True)]
    # the same project as "good" (its vite.config.js ignored): scored once, noted only on it
    assert by["locked"]["content_hash"] == by["good"]["content_hash"]
    assert by["locked"]["reward"] == by["good"]["reward"]
    assert by["locked"]["stages"][0]["details"]["ignored_files"][0]["file"] == "vite.config.js"
    assert "ignored_files" not in by["good"]["stages"][0]["details"]
    assert stages["broken"] == [("structure", True), ("build", False)]
    assert stages["../../hostile"] == [("structure", False)]
    assert by["../../hostile"]["stages"][0]["details"]["reason"] == "path_escapes"
    assert by["7"]["stages"][0]["details"]["reason"] == "unterminated_fence"
    assert by["good"]["reward"] > 3 / 4 > 2 / 4 > by["broken"]["reward"] >= 1 / 4
    assert by["../../hostile"]["reward"] == 0.0 == by["7"]["reward"]
    projects = out.parent / "results.projects"
    assert sorted(p.name.rsplit("-", 1)[0] for p in projects.iterdir()) == [
        "broken", "good", "locked"]
    assert not (tmp_path.parent / "etc").exists()
    printed = capsys.readouterr().out
    assert "build" in printed  # the summary lists the inserted stage
    assert "(4 scored, 0 resumed, 1 duplicate content)" in printed
    before = out.read_text()
    assert main([*args, "--resume"]) == 0  # every id is done: nothing re-scored or appended
    assert out.read_text() == before and "5 resumed" in capsys.readouterr().out


def test_from_responses_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\nnot json\n')
    assert main(["score", "--from-responses", str(bad), "--out", out]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    assert main(["score", "--from-responses", str(bad), "--out", out]) == 2
    assert "duplicate id 'a'" in capsys.readouterr().err
    bad.write_text('{"id": "a", "text": "x"}\n')
    assert main(["score", "--from-responses", str(bad), "--scaffold", "next", "--out", out]) == 2
    assert "unknown scaffold 'next'" in capsys.readouterr().err
    assert main(["score", str(tmp_path), "--from-responses", str(bad), "--out", out]) == 2
    assert main(["score", "--out", out]) == 2
