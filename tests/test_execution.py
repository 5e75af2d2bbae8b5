"""Execution grading is pure: hand-built SiteVisits in, exact scores and gates out."""
from __future__ import annotations

import pytest

from vlmagent.config import ExecutionConfig
from vlmagent.rewards.execution import grade_visit
from vlmagent.types import Interaction, PageVisit, SiteVisit


def page(path="/index.html", **kw) -> PageVisit:
    base = dict(status=200, blank=False, viewport_meta=True, mobile_overflow_px=0)
    return PageVisit(path=path, **{**base, **kw})


def test_perfect_site():
    v = SiteVisit(pages=[page(internal_links=["/a.html"]), page("/a.html")])
    score, passed, d = grade_visit(v, ExecutionConfig())
    assert passed and score == 1.0 and "interactive" not in d["checks"]  # no elements: n/a


def test_hand_computed_mix():
    v = SiteVisit(
        pages=[page(internal_links=["/a.html", "/b.html"], console_errors=["boom"],
                    interactions=[Interaction("click", "button#x", True),
                                  Interaction("click", "button#y", False)]),
               page("/a.html", mobile_overflow_px=120, http_errors=["404 /x.png"])],
        broken_links=["/index.html -> /b.html"], blocked_requests=["GET https://cdn.x/y.js"])
    score, passed, d = grade_visit(v, ExecutionConfig())
    c = d["checks"]
    assert c == {"loads": 1.0, "renders": 1.0, "no_exceptions": 1.0, "console_clean": 0.5,
                 "requests_ok": 0.875, "sandbox_clean": 0.0, "links_ok": 0.5, "interactive": 0.5,
                 "mobile": 0.5, "no_loops": 1.0, "no_spam": 1.0}
    # requests_ok: (1 + (1 - 1/4)) / 2; loads and renders count double
    assert score == pytest.approx((7.875 + 2) / 13)
    assert passed  # 0.76 >= 0.5 and the index is fine
    assert d["missing_files"] == ["/x.png"]
    assert "/a.html: overflows 120px horizontally on mobile" in d["problems"]
    assert "/index.html: click on button#y changed nothing" in d["problems"]
    assert not grade_visit(v, ExecutionConfig(pass_threshold=0.8))[1]


@pytest.mark.parametrize("index,gate", [
    (page(status=404), "index_loads"),
    (page(status=None, load_error="timeout"), "index_loads"),
    (page(blank=True), "index_renders"),
    (page(page_errors=["TypeError: x"]), "index_no_exceptions"),
    (page(crashed=True), "index_no_exceptions"),
    (page(dom={"navigations": 11}), "index_not_looping"),
])
def test_index_gates(index, gate):
    score, passed, d = grade_visit(SiteVisit(pages=[index, page("/b.html")]), ExecutionConfig())
    assert not passed and d["gate"][gate] is False


def test_page_errors_gate_is_configurable():
    v = SiteVisit(pages=[page(page_errors=["TypeError: x"])])
    assert grade_visit(v, ExecutionConfig(fail_on_page_errors=False))[1]


def test_spam_and_empty_visit():
    spam = SiteVisit(pages=[page()], dialogs=1500)
    score, passed, d = grade_visit(spam, ExecutionConfig())
    assert not passed and d["checks"]["no_spam"] == 0.0 and "site: opened 1500 dialogs" in (
        " ".join(d["problems"]))
    score, passed, d = grade_visit(SiteVisit(error="browser died"), ExecutionConfig())
    assert score == 0.0 and not passed and d["error"] == "browser died"


def test_an_unfinished_index_fails_the_gate_and_is_said_why():
    v = SiteVisit(pages=[page()])
    score, passed, d = grade_visit(v, ExecutionConfig(), ["cut off: the file ends inside a tag"])
    assert not passed and d["gate"]["index_finished"] is False and score == 1.0
    assert d["problems"][0] == "/index.html: cut off: the file ends inside a tag"
    assert grade_visit(v, ExecutionConfig())[1]
