"""The sandboxed browser on real Chromium: findings, sandbox, time bounds, recovery."""
# ruff: noqa: F811  (the fixtures imported from browsing are redefined by name as arguments)
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from browsing import (  # noqa: F401  (fixtures are used by name)
    CFG,
    NORMAL,
    SLACK_S,
    browser,
    check_normal,
    dump,
    hostile,
    normal,
    png_size,
    sites,
)
from PIL import Image

from vlmagent.config import BrowserConfig, ExecutionConfig
from vlmagent.rewards.execution import grade_visit
from vlmagent.web.browser import Browser, BrowserError, find_chromium
from vlmagent.web.crawl import is_blank
from vlmagent.web.sitegen import FAULTS, generate_sites, write_site
from vlmagent.web.siteserver import SiteServer

pytestmark = pytest.mark.browser


def test_find_chromium(monkeypatch) -> None:
    monkeypatch.delenv("VLMAGENT_CHROMIUM", raising=False)
    assert os.path.basename(find_chromium(BrowserConfig())) in ("chromium", "chromium-browser")
    monkeypatch.setenv("VLMAGENT_CHROMIUM", "/usr/bin/chromium")
    assert find_chromium(BrowserConfig()) == "/usr/bin/chromium"
    with pytest.raises(BrowserError, match="apt-get install -y chromium"):
        find_chromium(BrowserConfig(executable="/nonexistent/chromium"))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("VLMAGENT_CHROMIUM")
    with pytest.raises(BrowserError, match="apt-get install -y chromium"):
        find_chromium(BrowserConfig())


def test_missing_chromium_raises_not_a_site_fault(normal: Path) -> None:
    with Browser(BrowserConfig(executable="/nonexistent/chromium")) as b:
        with pytest.raises(BrowserError):
            b.visit_site(normal)


def test_second_live_browser_in_a_thread_raises(browser: Browser, normal: Path) -> None:
    check_normal(browser.visit_site(normal))
    with Browser(CFG) as other:  # Playwright's sync API runs once per thread: not a site fault
        with pytest.raises(BrowserError, match="could not start Playwright"):
            other.visit_site(normal)
    check_normal(browser.visit_site(normal))


def test_normal_site_and_screenshots(browser: Browser, normal: Path, tmp_path: Path) -> None:
    visit = browser.visit_site(normal, tmp_path / "shots")
    check_normal(visit)
    index = visit.pages[0]
    assert png_size(index.screenshot_desktop) == (CFG.viewport_width, CFG.viewport_height)
    assert png_size(index.screenshot_mobile) == (CFG.mobile_width, CFG.mobile_height)
    assert index.screenshot_desktop == str(tmp_path / "shots" / "p0-desktop.png")
    assert Path(visit.pages[1].screenshot_mobile or "").name == "p1-mobile.png"
    assert index.internal_links == ["/about.html"] and index.dom["buttons"] == 1
    # nothing on a normal site waits on a timeout: well under a navigation timeout per page
    assert 0 < visit.seconds < len(visit.pages) * CFG.nav_timeout_s + SLACK_S


def test_generated_sites_match_their_faults(browser: Browser, tmp_path: Path) -> None:
    paths = generate_sites(tmp_path, 3, seed=76)  # 3 sites with every fault among them
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {f for faults in manifest.values() for f in faults} == set(FAULTS)
    for path in paths:
        faults, visit = manifest[path.name], browser.visit_site(path)
        index = visit.pages[0]
        assert visit.error is None and index.status == 200 and index.blank is False
        assert len(visit.pages) == len(list(path.glob("*.html")))
        assert ("404 /images/hero.jpg" in index.http_errors) == ("missing_image" in faults)
        assert (index.console_errors == ["failed to init widget"]) == ("console_error" in faults)
        assert ("/index.html -> /pricing.html" in visit.broken_links) == ("broken_link" in faults)
        assert index.viewport_meta == ("no_viewport" not in faults)
        assert ((index.mobile_overflow_px or 0) > 500) == ("overflow" in faults)
        clicks = [i for i in index.interactions if i.kind == "click"]
        assert clicks and all(i.changed for i in clicks)  # every generated button does something
        assert all(i.changed for i in index.interactions if i.kind == "form")


def test_clicks_detect_change_and_no_change(browser: Browser, sites: Path) -> None:
    root = write_site(sites / "clicks", {
        "index.html": """<!doctype html><title>Clicks</title><p id="out">0</p><div id="s">x</div>
<button id="inc" onclick="out.textContent = +out.textContent + 1">Add</button>
<button id="noop">Nothing</button>
<button id="log" onclick="console.log('just logging')">Log</button>
<a href="#">Placeholder</a>
<span role="button" id="later" onclick="setTimeout(() => s.classList.add('on'), 10)">Soon</span>
<button id="go" onclick="location.href = 'about.html'">Go</button>
<button id="after" onclick="out.textContent = 'after'">After</button>
<button id="hidden" style="display:none" onclick="out.textContent='h'">Hidden</button>
<form><button id="in-form" type="button" onclick="out.textContent='f'">In form</button></form>
""",
        "about.html": "<!doctype html><title>About</title><p>about</p>",
    })
    index = browser.visit_site(root).pages[0]
    got = {i.target: (i.changed, i.navigated_to) for i in index.interactions if i.kind == "click"}
    assert got == {
        "button#inc 'Add'": (True, None), "button#noop 'Nothing'": (False, None),
        "button#log 'Log'": (False, None), "a 'Placeholder'": (False, None),
        "span#later 'Soon'": (True, None), "button#go 'Go'": (True, "/about.html"),
    }  # max_clicks_per_page=6: #after is the 7th; hidden and in-form buttons are never picked
    assert all(i.error is None for i in index.interactions)


def test_click_after_navigation_comes_back(browser: Browser, sites: Path) -> None:
    root = write_site(sites / "back", {
        "index.html": "<title>Back</title><p id='out'>0</p><button onclick=\"location.href="
                      "'b.html'\">Away</button><button id='x' onclick=\"out.textContent='1'\">"
                      "Here</button><a href='#sec'>Jump</a><h2 id='sec'>Sec</h2>"
                      "<button onclick=\"alert('hi')\">Alert</button>"
                      "<a href='#top' target='_blank'>Tab</a>",
        "b.html": "<title>B</title>",
    })
    visit = browser.visit_site(root)
    # the hash jump changes the URL; the alert and the new tab are neutralised, and counted
    assert [(i.changed, i.navigated_to) for i in visit.pages[0].interactions] == [
        (True, "/b.html"), (True, None), (True, None), (True, None), (True, None)]
    assert (visit.dialogs, visit.popups) == (1, 1)


def test_forms_are_filled_and_submitted(browser: Browser, sites: Path) -> None:
    checks = ("f.email.value.includes('@') && +f.qty.value >= 2 && f.size.value === 'm' && "
              "f.agree.checked && f.plan.value === 'a' && /^\\d{4}-\\d\\d-\\d\\d$/.test(f.day"
              ".value) && f.site.value.startsWith('http') && f.msg.value.length > 3 && "
              "f.phone.value.length > 5 && f.name.value.length > 0")
    root = write_site(sites / "forms", {
        "index.html": f"""<!doctype html><title>Forms</title><p id="res"></p>
<form id="f1"><input name="name" required><input type="email" name="email" required>
<input type="number" name="qty" min="2" max="9"><select name="size"><option value="">-</option>
<option value="m">M</option></select><input type="checkbox" name="agree" required>
<input type="radio" name="plan" value="a"><input type="radio" name="plan" value="b">
<input type="date" name="day"><input type="url" name="site"><input type="tel" name="phone">
<textarea name="msg"></textarea><button>Send</button></form>
<form id="f2" action="thanks.html"><input name="q"><input type="submit" value="Go"></form>
<script>const f = document.getElementById('f1');
f.onsubmit = e => {{ e.preventDefault(); if ({checks}) res.textContent = 'valid'; }};</script>
""",
        "thanks.html": "<!doctype html><title>Thanks</title><p>Thanks</p>",
        "noop.html": "<title>Noop</title><form onsubmit='return false'><input name='a'>"
                     "<button>Send</button></form><form><input name='z' pattern='[0-9]{3}'"
                     " required><button>Send</button></form>",
    })
    visit = browser.visit_site(root)
    forms = [i for i in visit.pages[0].interactions if i.kind == "form"]
    assert [(i.target, i.changed, i.navigated_to, i.error) for i in forms] == [
        ("form#f1 'Send'", True, None, None), ("form#f2 'Go'", True, "/thanks.html", None)]
    write_site(root, {"index.html": "<title>i</title><a href='noop.html'>n</a>"})
    noop = browser.visit_site(root).pages[1]
    assert [(i.changed, i.error) for i in noop.interactions] == [
        (False, None), (False, "form still invalid after filling")]


def test_navigations_after_load_are_interaction_outcomes(browser: Browser, sites: Path) -> None:
    """A static site's POST form gets a 405 and a GET search form a 404 from a server with no
    backend: outcomes of those interactions, never the status of the page that holds them."""
    root = write_site(sites / "statuses", {
        "index.html": "<!doctype html><title>Contact</title><h1>Contact us</h1>"
                      "<form method='post' action='/contact'><input name='name' required>"
                      "<button>Send</button></form>"
                      "<form action='/search'><input type='search' name='q'>"
                      "<button>Search</button></form>"
                      "<button onclick=\"location.href='gone.html'\">Go</button>",
        "away.html": "<!doctype html><title>Away</title><p>moved</p>"
                     "<script>setTimeout(() => location.href = 'nowhere.html', 30)</script>",
        "ext.html": "<!doctype html><title>Newsletter</title><form method='post' "
                    "action='https://forms.example.org/f/x'><input type='email' name='e'>"
                    "<button>Join</button></form>",
    })
    write_site(root, {"index.html": (root / "index.html").read_text()
                      + "<a href='away.html'>away</a><a href='ext.html'>join</a>"})
    visit = browser.visit_site(root)
    index, away, ext = visit.pages
    assert (index.status, away.status, ext.status) == (200, 200, 200)
    # posted to an external service: not followed, recorded as leaving the site, not as the
    # site reaching out of the sandbox
    assert visit.left_site == ["POST https://forms.example.org/f/x"]
    assert visit.blocked_requests == [] and ext.interactions[0].changed
    assert [(i.kind, i.changed, i.navigated_to, i.status) for i in index.interactions] == [
        ("click", True, "/gone.html", 404), ("form", True, "/contact", 405),
        ("form", True, "/search", 404)]
    grade = grade_visit(visit, ExecutionConfig())[2]
    assert grade["checks"]["loads"] == 1.0 and grade["gate"]["index_loads"]
    assert grade["checks"]["sandbox_clean"] == 1.0
    assert not any("did not load" in p for p in grade["problems"])


def test_rerendered_buttons_and_a_react_controlled_form(browser: Browser, sites: Path) -> None:
    """What framework pages do: a click re-renders every button (Vue, Alpine), and a React form
    keeps its input's value in state, so a fill must go through React's view of the input."""
    root = write_site(sites / "frameworks", {"index.html": """<!doctype html><title>F</title>
<div id="app"></div><p id="n">0</p>
<script>
let n = 0;
const show = k => { document.getElementById('n').textContent = n += k; draw(); };
const draw = () => {
  app.innerHTML = '<button class="inc">Add one</button><button class="dec">Take one</button>';
  app.querySelector('.inc').onclick = () => show(1);
  app.querySelector('.dec').onclick = () => show(-1);
};
draw();
</script>
<div id="root"></div>
<script src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script>
const e = React.createElement;
function Todo() {
  const [text, setText] = React.useState(''), [items, setItems] = React.useState([]);
  const add = ev => { ev.preventDefault(); if (text) { setItems([...items, text]); setText(''); } };
  return e('form', {onSubmit: add}, e('input', {value: text, name: 'task',
    onChange: ev => setText(ev.target.value)}), e('button', null, 'Add task'),
    e('ul', null, items.map((t, i) => e('li', {key: i}, t))));
}
ReactDOM.createRoot(document.getElementById('root')).render(e(Todo));
</script>"""})
    index = browser.visit_site(root).pages[0]
    assert [(i.kind, i.target, i.changed, i.error) for i in index.interactions] == [
        ("click", "button.inc 'Add one'", True, None),
        ("click", "button.dec 'Take one'", True, None),  # its node was replaced by the first
        ("form", "form 'Add task'", True, None)]  # React saw the typed task and listed it
    assert index.page_errors == [] and index.blank is False


def test_errors_links_blank_and_overflow(browser: Browser, sites: Path) -> None:
    root = write_site(sites / "faults", {
        "index.html": """<!doctype html><html><head><title>Faults</title></head><body>
<div style="width:1000px">wide</div><img src="missing.png">
<a href="gone.html">gone</a> <a href="blank.html#x">blank</a> <a href="blank.html?y=1">again</a>
<a href="sub">sub</a> <a href="style.css">css</a> <a href="https://example.com/">out</a>
<script>console.error('bad thing'); console.warn('only a warning');
setTimeout(() => { throw new Error('boom'); }, 0); undefinedFunction();</script></body></html>""",
        "blank.html": "<!doctype html><html><body style='background:#fff'></body></html>",
        "sub/index.html": "<title>Sub</title><p>in a folder</p><a href='../index.html'>up</a>",
        "style.css": "p{}",
    })
    visit = browser.visit_site(root)
    assert [p.path for p in visit.pages] == ["/index.html", "/blank.html", "/sub"]
    index, blank, sub = visit.pages
    assert visit.broken_links == ["/index.html -> /gone.html"]
    assert index.console_errors == ["bad thing"]
    assert sorted(index.page_errors) == ["Error: boom",
                                         "ReferenceError: undefinedFunction is not defined"]
    assert index.http_errors == ["404 /missing.png"]
    assert index.mobile_overflow_px is not None and index.mobile_overflow_px >= 1000 - 375
    assert index.viewport_meta is False and index.blank is False
    assert index.internal_links == ["/gone.html", "/blank.html", "/sub", "/style.css"]
    assert blank.blank is True and blank.visible_text_chars == 0 and blank.status == 200
    assert sub.title == "Sub" and sub.mobile_overflow_px == 0
    assert visit.blocked_requests == []  # a link is not a request: nothing was fetched


def test_max_pages_and_site_paths_only(browser: Browser, sites: Path) -> None:
    root = write_site(sites / "chain", {
        f"p{i}.html": f"<title>{i}</title><a href='p{i + 1}.html'>next</a>" for i in range(8)})
    write_site(root, {"index.html": "<a href='p0.html'>start</a>"})
    visit = browser.visit_site(root)
    assert len(visit.pages) == CFG.max_pages
    assert [p.path for p in visit.pages] == ["/index.html", "/p0.html", "/p1.html", "/p2.html"]
    text = dump(visit)
    assert str(root) not in text and os.path.realpath(root) not in text and "127.0.0.1" not in text


def test_screenshot_html(browser: Browser) -> None:
    html = ("<body style='margin:0;background:rgb(255,0,0)'><img src='https://cdn.example.com/x'>"
            "<div style='height:1500px'></div></body>")
    png = browser.screenshot_html(html, width=320, height=200)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (320, 200) and im.convert("RGB").getpixel((300, 150)) == (255, 0, 0)
    assert browser.screenshot_html(html, width=320, height=200) == png  # deterministic
    with Image.open(io.BytesIO(browser.screenshot_html(html, 320, 200, full_page=True))) as im:
        assert im.width == 320 and 1500 <= im.height <= 1540  # the div plus the img's line box


def rgb_at(png: bytes, *points: tuple[int, int]) -> list[tuple[int, int, int]]:
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        return [rgb.getpixel(p) for p in points]


def test_screenshot_site_renders_its_own_files(browser: Browser, sites: Path) -> None:
    root = write_site(sites / "shot", {
        "index.html": "<!doctype html><link rel='stylesheet' href='css/style.css'><body>"
                      "<div id='box'></div><div style='height:1500px'></div>"
                      "<script>alert('hi'); confirm('sure?')</script></body>",
        "css/style.css": "body{margin:0;background:rgb(0,128,255)}"
                         "#box{width:100px;height:50px;background:rgb(255,0,0)}",
        "about.html": "<body style='margin:0;background:rgb(0,200,0)'></body>",
    })
    png = browser.screenshot_site(root, width=320, height=200)  # the dialogs never block it
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (320, 200)
    assert rgb_at(png, (10, 10), (300, 150)) == [(255, 0, 0), (0, 128, 255)]
    assert browser.screenshot_site(root, width=320, height=200) == png  # deterministic
    with Image.open(io.BytesIO(browser.screenshot_site(root, "/index.html", 320, 200,
                                                       full_page=True))) as im:
        assert im.width == 320 and im.height >= 1550
    assert rgb_at(browser.screenshot_site(root, "about.html", 320, 200), (5, 5)) == [(0, 200, 0)]


def test_screenshot_site_blocks_other_requests(browser: Browser, sites: Path) -> None:
    other = write_site(sites / "other", {"x.png": "not really a png"})
    with SiteServer(other) as outside:  # a loopback server that is not the site's own
        root = write_site(sites / "leaky", {
            "index.html": "<body style='margin:0;background:rgb(255,0,0)'>"
                          f"<img src='{outside.base_url}/x.png' onerror=\"document.body.style"
                          ".background='rgb(0,0,255)'\"><img src='https://cdn.example.com/y.png'>"
                          f"<script>fetch('{outside.base_url}/f').catch(() => 0)</script></body>"})
        png = browser.screenshot_site(root, width=320, height=200)
        assert outside.requests == []
    assert rgb_at(png, (300, 150)) == [(0, 0, 255)]  # the image failed to load, as blocked


def test_screenshot_site_missing_page_is_a_404_render(browser: Browser, normal: Path) -> None:
    png = browser.screenshot_site(normal, "/nope.html", 320, 200)
    assert not is_blank(png)  # the server's short "404 Not Found" page
    empty = browser.screenshot_site(normal / "no-such-folder", width=320, height=200)
    assert not is_blank(empty)

