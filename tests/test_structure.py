"""Structure stage: pure file checks, every failure listed by file, nothing read outside."""
from __future__ import annotations

import json
import os
import time

import pytest

from vlmagent.config import StructureConfig
from vlmagent.rewards.structure import check_structure, decode_text

CSS = "body{background:url('img/bg.png')}\n@import 'more.css';\n"


def site(tmp_path, files: dict[str, str | bytes], name: str = "s"):
    root = tmp_path / name
    root.mkdir()
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def run(root, **kw):
    return check_structure(root, StructureConfig(**kw), time.monotonic() + 10)


GOOD = {
    "index.html": '<html><head><link rel="stylesheet" href="css/site.css"></head><body>'
                  '<h1>Hello</h1><a href="about.html#team">About</a><a href="/sub/">Sub</a>'
                  '<img src="img/a.png" srcset="img/a.png 1x, img/b.png 2x">'
                  '<a href="https://example.org/x">ext</a><a href="mailto:a@b.c">mail</a>'
                  '<a href="#top">top</a><div style="background:url(img/a.png)"></div>'
                  '</body></html>',
    "about.html": '<p>About us</p><a href="index.html">home</a>',
    "sub/index.html": '<p>Sub</p><a href="../about.html">up</a>',
    "css/site.css": CSS.replace("img/", "../img/").replace("more.css", "more.css"),
    "css/more.css": "h1{color:#123}",
    "img/a.png": b"\x89PNG fake",
    "img/b.png": b"\x89PNG fake",
    "img/bg.png": b"\x89PNG fake",
}


def test_good_site_passes_with_exact_counts(tmp_path):
    r = run(site(tmp_path, GOOD))
    assert r.passed and r.score == pytest.approx(1.0), r.details
    refs = r.details["refs"]
    # index: css, about, /sub/, a.png, a.png + b.png (srcset), style url = 7; about: 1; sub: 1;
    # site.css: bg.png + more.css = 2
    assert refs == {"internal": 11, "resolved": 11, "fraction": 1.0, "external": 1}
    assert r.details["files"] == 8 and r.details["content"] == "static"


def test_missing_refs_lower_score_and_are_listed_by_file(tmp_path):
    files = dict(GOOD)
    del files["img/b.png"], files["about.html"]
    r = run(site(tmp_path, files))
    problems = {(f["file"], f["problem"]) for f in r.details["failures"]}
    assert ("index.html", "missing: about.html#team") in problems
    assert ("index.html", "missing: img/b.png") in problems
    assert ("sub/index.html", "missing: ../about.html") in problems
    assert r.details["refs"]["resolved"] == 7 and r.details["refs"]["internal"] == 10
    # 6 hard checks, the resolved fraction, and the share of pages that are whole
    assert r.score == pytest.approx((6 + 7 / 10 + 1) / 8)
    # missing files are graded (here, and as failed requests by execution), never gated: a page
    # whose every reference is missing is still a page to score
    assert r.passed and r.details["missing"] == {"index.html": ["about.html#team", "img/b.png"],
                                                 "sub/index.html": ["../about.html"]}
    only_missing = {"index.html": "<h1>Hi</h1><img src='a.png'><img src='b.png'>"}
    r = run(site(tmp_path, only_missing, "t"))
    assert r.passed and r.details["refs"]["fraction"] == 0.0


@pytest.mark.parametrize("files,problem", [
    ({}, "missing or not a regular file"),
    ({"about.html": "<p>x</p>"}, "html files found: about.html"),
    ({"index.html": bytes(range(256)) * 4}, "not text"),
    ({"index.html": "just some words"}, "no HTML elements"),
    ({"index.html": "<html><body>   <div></div></body></html>"}, "no visible body content"),
    ({"index.html": '<a href="../../etc/passwd">x</a>'}, "reference escapes the root"),
    ({"index.html": '<img src="file:///etc/passwd">ok'}, "file:// reference"),
])
def test_hard_failures(tmp_path, files, problem):
    r = run(site(tmp_path, files))
    assert not r.passed
    assert any(problem in f["problem"] for f in r.details["failures"]), r.details
    assert 0.0 <= r.score < 1.0


def test_symlink_escape_is_hard_fail_and_target_never_reported(tmp_path):
    root = site(tmp_path, {"index.html": '<p>hi</p><a href="secret.txt">s</a>'})
    (root / "secret.txt").symlink_to("/etc/passwd")
    (root / "etc").symlink_to("/etc")
    (root / "ok.txt").write_text("ok")
    (root / "inside").symlink_to("ok.txt")
    r = run(root)
    assert not r.passed and r.details["checks"]["no_escaping_symlinks"] is False
    blob = json.dumps(r.details)
    assert "/etc/passwd" not in blob and "root:x:" not in blob
    escaping = sorted(f["file"] for f in r.details["failures"] if "symlink escapes" in f["problem"])
    assert escaping == ["etc", "secret.txt"]
    assert {"file": "index.html", "problem": "reference escapes the root: secret.txt"} in (
        r.details["failures"])


def test_script_rendered_app_passes_and_says_so(tmp_path):
    r = run(site(tmp_path, {"index.html": '<div id="root"></div><script src="app.js"></script>',
                            "app.js": "document.getElementById('root').textContent='hi'"}))
    assert r.passed and r.details["content"] == "rendered by script"


def test_missing_folder_and_empty_folder(tmp_path):
    assert not run(tmp_path / "nope").passed
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty")
    assert not r.passed and r.details["files"] == 0


def test_in_root_symlinked_index_is_followed(tmp_path):
    root = site(tmp_path, {"pages/home.html": "<h1>Home</h1>"})
    os.symlink("pages/home.html", root / "index.html")
    assert run(root).passed


def test_decode_text():
    assert decode_text("héllo".encode()) == "héllo"
    assert decode_text(b'<meta charset="latin-1"><p>caf\xe9') is not None
    assert decode_text(b"\xff\xfe\x00garbage") is None
    assert decode_text(bytes([1, 2, 3, 4, 5]) * 10 + b"<p>x</p>") is None


def test_large_file_is_not_parsed(tmp_path):
    r = run(site(tmp_path, {"index.html": "<p>hi</p>" + "x" * 5000}), max_file_bytes=1000)
    assert not r.passed and "larger than" in r.details["failures"][0]["problem"]


@pytest.mark.parametrize("html,cut", [
    ("<html><body><div class='card'><p>Our mis", True),  # ends mid-text, containers open
    ("<html><body><main><h1>Hi</h1><div class=\"ca", True),  # ends inside a tag
    ("<html><body><h1>Hi</h1><!-- a comm", True),
    ("<h1>Hi</h1><div><p>fragment without an html element", False),  # a fragment: no evidence
    ("<html><body><div><h1>Hi</h1></body></html>", False),  # an unclosed div, but finished
    ("<html><body><div><h1>Hi</h1>\n", False),  # sloppy, but it ends with a tag
    ("<!doctype html><html><body><ul><li>a<li>b</ul><p>end", False),  # optional end tags only
])
def test_a_cut_off_index_is_unfinished(tmp_path, html, cut):
    """Listed for the execution gate (the page still shows something), never a structure gate."""
    r = run(site(tmp_path, {"index.html": html}))
    assert bool(r.details["unfinished"]) is cut and r.passed, r.details
    assert r.details["whole_pages"] == (0.0 if cut else 1.0)


def test_a_generation_loop_is_unfinished_and_other_pages_cost_score(tmp_path):
    para = "<p>We believe that yoga is for everyone, whatever their age or flexibility.</p>"
    looping = {"index.html": "<html><body><h1>Yoga</h1>" + para * 12 + "</body></html>"}
    r = run(site(tmp_path, looping, "loop"))
    assert r.passed and r.details["unfinished"] == [
        "one passage repeated 12 times (a generation loop)"]
    fine = {"index.html": "<html><body><h1>Yoga</h1>" + para * 3 + "<a href='a.html'>a</a>"
            "</body></html>", "a.html": "<html><body><div><p>About us: we st"}
    r = run(site(tmp_path, fine, "about_cut"))
    assert r.passed and r.details["whole_pages"] == 0.5  # the cut-off page costs score only
    assert r.details["unfinished"] == [] and r.score == pytest.approx((6 + 1 + 0.5) / 8)
