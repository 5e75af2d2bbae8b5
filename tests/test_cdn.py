"""The offline CDN mirror (vlmagent/web/cdn.py): the resolver on the installed mirror, then pages
loading libraries from real CDN URLs in the sandboxed Chromium."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import urljoin

import pytest

from vlmagent.config import BrowserConfig
from vlmagent.web.browser import Browser, BrowserError
from vlmagent.web.cdn import PACKAGE, Hit, Mirror, MirrorError, Miss, lock_hash, mirror_path
from vlmagent.web.sitegen import write_site

INSTALLED = mirror_path(BrowserConfig())


@pytest.fixture(scope="module")
def mirror() -> Mirror:
    """The installed mirror. The suite runs after scripts/setup.sh, which installs it: missing,
    every test that needs it fails saying so (never a silent skip)."""
    try:
        return Mirror.load(INSTALLED)
    except MirrorError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)  # outside the except: the message alone, no chain


def hit(mirror: Mirror, url: str) -> Hit:
    found = mirror.resolve(url)
    assert isinstance(found, Hit), f"{url}: {found!r}"
    return found


def miss(mirror: Mirror, url: str) -> str:
    found = mirror.resolve(url)
    assert isinstance(found, Miss), f"{url}: {found!r}"
    return found.reason


def served(h: Hit, mirror: Mirror) -> str:
    """The answering file, relative to the mirror's node_modules."""
    assert h.path is not None and h.path.is_relative_to(mirror.root)
    return h.path.relative_to(mirror.root).as_posix()


# ---------------------------------------------------------------- the install
def test_pins_are_exact_and_the_install_matches_them(mirror: Mirror) -> None:
    listed = json.loads((PACKAGE / "package.json").read_text())["dependencies"]
    assert all(re.fullmatch(r"(npm:(@[\w.-]+/)?[\w.-]+@)?\d+\.\d+\.\d+", v)
               for v in listed.values()), listed
    assert sum(len(v) for v in mirror.packages.values()) == len(listed)
    assert sorted(p.version for p in mirror.packages["bootstrap"]) == ["3.4.1", "4.6.2", "5.3.9"]
    digest = hashlib.sha256((PACKAGE / "package-lock.json").read_bytes()).hexdigest()[:12]
    assert lock_hash() == digest and INSTALLED.parent.name == f"cdn-{digest}"
    assert not os.access(INSTALLED / "react18" / "package.json", os.W_OK) or os.geteuid() == 0


def test_mirror_path_config_then_env_then_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLMAGENT_CDN_MIRROR", str(tmp_path / "env"))
    assert mirror_path(BrowserConfig(cdn_mirror_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"
    assert mirror_path(BrowserConfig()) == tmp_path / "env"
    monkeypatch.delenv("VLMAGENT_CDN_MIRROR")
    monkeypatch.setenv("VLMAGENT_CACHE", str(tmp_path))
    assert mirror_path(BrowserConfig()) == tmp_path / f"cdn-{lock_hash()}" / "node_modules"


def test_a_missing_mirror_names_its_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match=r"not installed at .*nowhere.*scripts/setup\.sh.*"
                                          r"browser\.cdn_mirror=false"):
        Mirror.load(tmp_path / "nowhere" / "node_modules")


# ---------------------------------------------------------------- URL forms
@pytest.mark.parametrize("url, spec, pinned, path", [
    ("https://unpkg.com/react@18/umd/react.production.min.js", "react@18", "react@18.3.1",
     "react18/umd/react.production.min.js"),
    ("https://unpkg.com/react@18.2.0", "react@18.2.0", "react@18.3.1", "react18/index.js"),
    ("https://unpkg.com/vue@3", "vue@3", "vue@3.5.45", "vue/dist/vue.global.js"),  # `unpkg`
    ("https://unpkg.com/@babel/standalone/babel.min.js", "@babel/standalone",
     "@babel/standalone@7.29.13", "@babel/standalone/babel.min.js"),
    ("http://unpkg.com/react-dom@18/umd/react-dom.development.js", "react-dom@18",
     "react-dom@18.3.1", "react-dom18/umd/react-dom.development.js"),
    ("https://unpkg.com/three@0.128.0/examples/js/controls/OrbitControls.js", "three@0.128.0",
     "three@0.128.0", "three/examples/js/controls/OrbitControls.js"),
    ("https://cdn.jsdelivr.net/npm/bootstrap@5.3.0/dist/css/bootstrap.min.css",
     "bootstrap@5.3.0", "bootstrap@5.3.9", "bootstrap/dist/css/bootstrap.min.css"),
    ("https://cdn.jsdelivr.net/npm/chart.js", "chart.js", "chart.js@4.6.1",
     "chart.js/dist/chart.umd.min.js"),  # the `jsdelivr` field
    ("https://cdn.jsdelivr.net/npm/bootstrap@4.6.0/dist/js/bootstrap.bundle.min.js",
     "bootstrap@4.6.0", "bootstrap@4.6.2", "bootstrap4/dist/js/bootstrap.bundle.min.js"),
    ("https://cdn.jsdelivr.net/npm/vue@3/dist/vue.global.min.js", "vue@3", "vue@3.5.45",
     "vue/dist/vue.global.js"),  # jsDelivr minifies on request
    ("https://cdn.jsdelivr.net/npm/alpinejs@3.x.x/dist/cdn.min.js", "alpinejs@3.x.x",
     "alpinejs@3.17.5", "alpinejs/dist/cdn.min.js"),
    ("https://cdn.jsdelivr.net/npm/bulma@0.9.4/css/bulma.min.css", "bulma@0.9.4",
     "bulma@0.9.4", "bulma0/css/bulma.min.css"),
])
def test_unpkg_and_jsdelivr(mirror: Mirror, url: str, spec: str, pinned: str,
                            path: str) -> None:
    h = hit(mirror, url)
    assert (h.spec, h.pinned, served(h, mirror)) == (spec, pinned, path)
    assert h.headers == {"Content-Type": h.content_type, "Access-Control-Allow-Origin": "*"}


@pytest.mark.parametrize("lib, version, file, pinned, path", [
    ("font-awesome", "6.4.0", "css/all.min.css", "@fortawesome/fontawesome-free@6.7.2",
     "@fortawesome/fontawesome-free/css/all.min.css"),
    ("font-awesome", "5.15.4", "css/all.min.css", "@fortawesome/fontawesome-free@5.15.4",
     "fontawesome-free5/css/all.min.css"),
    ("font-awesome", "4.7.0", "css/font-awesome.min.css", "font-awesome@4.7.0",
     "font-awesome/css/font-awesome.min.css"),
    ("twitter-bootstrap", "4.6.0", "css/bootstrap.min.css", "bootstrap@4.6.2",
     "bootstrap4/dist/css/bootstrap.min.css"),  # under dist/
    ("Chart.js", "4.4.0", "chart.umd.min.js", "chart.js@4.6.1", "chart.js/dist/chart.umd.min.js"),
    ("three.js", "r128", "three.min.js", "three@0.128.0", "three/build/three.min.js"),
    ("animate.css", "4.1.1", "animate.min.css", "animate.css@4.1.1", "animate.css/animate.min.css"),
    ("jquery", "3.6.0", "jquery.min.js", "jquery@3.8.0", "jquery/dist/jquery.min.js"),
    ("react", "18.2.0", "umd/react.production.min.js", "react@18.3.1",
     "react18/umd/react.production.min.js"),
    ("react-dom", "18.2.0", "umd/react-dom.production.min.js", "react-dom@18.3.1",
     "react-dom18/umd/react-dom.production.min.js"),
    ("vue", "3.3.4", "vue.global.prod.min.js", "vue@3.5.45", "vue/dist/vue.global.prod.js"),
    ("lodash.js", "4.17.21", "lodash.min.js", "lodash@4.17.21", "lodash/lodash.min.js"),
    ("axios", "1.6.0", "axios.min.js", "axios@1.21.1", "axios/dist/axios.min.js"),
    ("d3", "7.8.5", "d3.min.js", "d3@7.9.2", "d3/dist/d3.min.js"),
    ("leaflet", "1.9.4", "images/marker-icon.png", "leaflet@1.9.4",
     "leaflet/dist/images/marker-icon.png"),
    ("bulma", "1.0.0", "css/bulma.min.css", "bulma@1.0.4", "bulma/css/bulma.min.css"),
    ("alpinejs", "3.13.0", "cdn.min.js", "alpinejs@3.17.5", "alpinejs/dist/cdn.min.js"),
    ("gsap", "3.12.2", "ScrollTrigger.min.js", "gsap@3.15.0", "gsap/dist/ScrollTrigger.min.js"),
    ("popper.js", "2.11.8", "umd/popper.min.js", "@popperjs/core@2.11.8",
     "@popperjs/core/dist/umd/popper.min.js"),
    ("popper.js", "1.16.1", "umd/popper.min.js", "popper.js@1.16.1",
     "popper.js/dist/umd/popper.min.js"),
])
def test_cdnjs(mirror: Mirror, lib: str, version: str, file: str, pinned: str,
               path: str) -> None:
    h = hit(mirror, f"https://cdnjs.cloudflare.com/ajax/libs/{lib}/{version}/{file}")
    assert (h.pinned, served(h, mirror)) == (pinned, path)
    assert h.spec == f"{pinned.rpartition('@')[0]}@{version}"


@pytest.mark.parametrize("url, pinned, path", [
    ("https://stackpath.bootstrapcdn.com/bootstrap/4.5.2/css/bootstrap.min.css", "bootstrap@4.6.2",
     "bootstrap4/dist/css/bootstrap.min.css"),
    ("https://maxcdn.bootstrapcdn.com/bootstrap/3.3.7/js/bootstrap.min.js", "bootstrap@3.4.1",
     "bootstrap3/dist/js/bootstrap.min.js"),
    ("https://stackpath.bootstrapcdn.com/font-awesome/4.7.0/css/font-awesome.min.css",
     "font-awesome@4.7.0", "font-awesome/css/font-awesome.min.css"),
    ("https://use.fontawesome.com/releases/v5.15.4/css/all.css",
     "@fortawesome/fontawesome-free@5.15.4", "fontawesome-free5/css/all.css"),
    ("https://use.fontawesome.com/releases/v6.5.1/js/all.js",
     "@fortawesome/fontawesome-free@6.7.2", "@fortawesome/fontawesome-free/js/all.js"),
    ("https://kit.fontawesome.com/a1b2c3d4e5.js", "@fortawesome/fontawesome-free@6.7.2",
     "@fortawesome/fontawesome-free/js/all.min.js"),
    ("https://code.jquery.com/jquery-3.6.0.min.js", "jquery@3.8.0", "jquery/dist/jquery.min.js"),
    ("https://code.jquery.com/jquery-3.7.1.js", "jquery@3.8.0", "jquery/dist/jquery.js"),
    ("https://code.jquery.com/jquery-3.5.1.slim.min.js", "jquery@3.8.0",
     "jquery/dist/jquery.slim.min.js"),
    ("https://code.jquery.com/jquery-latest.min.js", "jquery@3.8.0", "jquery/dist/jquery.min.js"),
    ("https://ajax.googleapis.com/ajax/libs/jquery/3.5.1/jquery.min.js", "jquery@3.8.0",
     "jquery/dist/jquery.min.js"),
])
def test_bootstrap_fontawesome_and_jquery_cdns(mirror: Mirror, url: str, pinned: str,
                                              path: str) -> None:
    h = hit(mirror, url)
    assert (h.pinned, served(h, mirror)) == (pinned, path)
    assert ("kit" in url) == any("kit" in n for n in h.notes)  # a kit is answered, and said so


@pytest.mark.parametrize("url", [
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.4.0/css/all.min.css",
    "https://use.fontawesome.com/releases/v5.15.4/css/all.css",
    "https://stackpath.bootstrapcdn.com/font-awesome/4.7.0/css/font-awesome.min.css",
    "https://maxcdn.bootstrapcdn.com/bootstrap/3.3.7/css/bootstrap.min.css",
    "https://cdn.jsdelivr.net/npm/bootstrap-icons@1.11.3/font/bootstrap-icons.min.css",
    "https://unpkg.com/leaflet@1.9.4/dist/leaflet.css",
    "https://unpkg.com/boxicons@2.1.4/css/boxicons.min.css",
    "https://cdn.jsdelivr.net/npm/remixicon@4.2.0/fonts/remixicon.css",
    "https://code.jquery.com/ui/1.13.2/themes/base/jquery-ui.css",
])
def test_a_stylesheets_relative_urls_resolve_too(mirror: Mirror, url: str) -> None:
    """Fonts and images a CDN stylesheet names relative to itself (url(../webfonts/x.woff2))
    are requested under the same CDN path: each must be answered as well."""
    css = hit(mirror, url).path.read_text()
    refs = {r.strip("'\"") for r in re.findall(r"url\(([^)]+)\)", css)}
    refs = {r for r in refs if not r.startswith(("data:", "#"))}
    assert refs, url
    for ref in refs:
        h = hit(mirror, urljoin(url, ref))
        assert h.content_type.startswith(("font/", "image/", "application/vnd.ms-fontobject"))


@pytest.mark.parametrize("url, pinned, path", [
    ("https://cdn.jsdelivr.net/npm/tailwindcss@2.2.19/dist/tailwind.min.css",
     "tailwindcss@2.2.19", "tailwindcss/dist/tailwind.min.css"),
    ("https://unpkg.com/tailwindcss@^2/dist/tailwind.min.css", "tailwindcss@2.2.19",
     "tailwindcss/dist/tailwind.min.css"),
    ("https://cdnjs.cloudflare.com/ajax/libs/tailwindcss/2.2.19/tailwind.min.css",
     "tailwindcss@2.2.19", "tailwindcss/dist/tailwind.min.css"),
    ("https://code.jquery.com/ui/1.13.2/jquery-ui.min.js", "jquery-ui@1.14.2",
     "jquery-ui/dist/jquery-ui.min.js"),
    ("https://code.jquery.com/ui/1.12.1/themes/smoothness/jquery-ui.css", "jquery-ui@1.14.2",
     "jquery-ui/dist/themes/smoothness/jquery-ui.css"),
    ("https://cdnjs.cloudflare.com/ajax/libs/jqueryui/1.13.2/jquery-ui.min.js",
     "jquery-ui@1.14.2", "jquery-ui/dist/jquery-ui.min.js"),
    ("https://unpkg.com/lucide@latest", "lucide@1.65.0", "lucide/dist/umd/lucide.min.js"),
    ("https://unpkg.com/lucide@0.263.1/dist/umd/lucide.js", "lucide@1.65.0",
     "lucide/dist/umd/lucide.js"),  # every 0.x: the same browser API
    ("https://unpkg.com/feather-icons", "feather-icons@4.29.2",
     "feather-icons/dist/feather.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/feather-icons/4.29.0/feather.min.js",
     "feather-icons@4.29.2", "feather-icons/dist/feather.min.js"),
    ("https://unpkg.com/boxicons@2.1.4/css/boxicons.min.css", "boxicons@2.1.4",
     "boxicons/css/boxicons.min.css"),
    ("https://unpkg.com/boxicons@2.1.4/dist/boxicons.js", "boxicons@2.1.4",
     "boxicons/dist/boxicons.js"),
    ("https://cdn.jsdelivr.net/npm/remixicon@4.2.0/fonts/remixicon.css", "remixicon@4.9.1",
     "remixicon/fonts/remixicon.css"),
    ("https://cdn.jsdelivr.net/npm/marked/marked.min.js", "marked@15.0.12",
     "marked/marked.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/highlight.js/11.9.0/highlight.min.js",
     "@highlightjs/cdn-assets@11.12.0", "@highlightjs/cdn-assets/highlight.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/highlight.js/11.9.0/styles/github.min.css",
     "@highlightjs/cdn-assets@11.12.0", "@highlightjs/cdn-assets/styles/github.min.css"),
    ("https://cdn.jsdelivr.net/npm/@highlightjs/cdn-assets@11.9.0/languages/python.min.js",
     "@highlightjs/cdn-assets@11.12.0", "@highlightjs/cdn-assets/languages/python.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/prism/1.29.0/prism.min.js", "prismjs@1.30.0",
     "prismjs/prism.js"),
    ("https://cdn.jsdelivr.net/npm/prismjs@1.29.0/themes/prism-tomorrow.min.css",
     "prismjs@1.30.0", "prismjs/themes/prism-tomorrow.min.css"),
    ("https://cdn.jsdelivr.net/npm/sweetalert2@11", "sweetalert2@11.26.25",
     "sweetalert2/dist/sweetalert2.all.js"),
    ("https://cdn.jsdelivr.net/npm/toastify-js", "toastify-js@1.12.0",
     "toastify-js/src/toastify.js"),
    ("https://unpkg.com/tippy.js@6", "tippy.js@6.3.7", "tippy.js/dist/tippy-bundle.umd.min.js"),
    ("https://cdn.jsdelivr.net/npm/flatpickr/dist/flatpickr.min.css", "flatpickr@4.6.13",
     "flatpickr/dist/flatpickr.min.css"),
    ("https://cdnjs.cloudflare.com/ajax/libs/Sortable/1.15.0/Sortable.min.js",
     "sortablejs@1.15.7", "sortablejs/Sortable.min.js"),
    ("https://cdn.jsdelivr.net/npm/daisyui@4.12.10/dist/full.min.css", "daisyui@4.12.24",
     "daisyui/dist/full.css"),  # jsDelivr minifies on request
    ("https://cdn.jsdelivr.net/npm/@picocss/pico@2/css/pico.min.css", "@picocss/pico@2.1.1",
     "@picocss/pico/css/pico.min.css"),
    ("https://cdnjs.cloudflare.com/ajax/libs/normalize/8.0.1/normalize.min.css",
     "normalize.css@8.0.1", "normalize.css/normalize.css"),
    ("https://unpkg.com/htmx.org@1.9.10", "htmx.org@1.9.12", "htmx1/dist/htmx.min.js"),
    ("https://unpkg.com/htmx.org@2.0.4", "htmx.org@2.0.11", "htmx.org/dist/htmx.min.js"),
    ("https://cdn.jsdelivr.net/npm/typed.js@2.0.12", "typed.js@2.1.0",
     "typed.js/dist/typed.umd.js"),  # not its CommonJS `main`
    ("https://cdn.jsdelivr.net/particles.js/2.0.0/particles.min.js", "particles.js@2.0.0",
     "particles.js/particles.js"),  # jsDelivr's old /<lib>/<version>/<file> form
    ("https://cdn.jsdelivr.net/npm/canvas-confetti@1.6.0/dist/confetti.browser.min.js",
     "canvas-confetti@1.9.4", "canvas-confetti/dist/confetti.browser.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/animejs/3.2.1/anime.min.js", "animejs@3.2.2",
     "animejs/lib/anime.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/moment.js/2.29.4/moment.min.js", "moment@2.31.0",
     "moment/min/moment.min.js"),
    ("https://cdn.jsdelivr.net/npm/dayjs@1/dayjs.min.js", "dayjs@1.11.23", "dayjs/dayjs.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/matter-js/0.19.0/matter.min.js", "matter-js@0.20.0",
     "matter-js/build/matter.min.js"),  # every 0.x
])
def test_more_libraries_pages_load(mirror: Mirror, url: str, pinned: str, path: str) -> None:
    h = hit(mirror, url)
    assert (h.pinned, served(h, mirror)) == (pinned, path)


def test_tailwind_play_cdn_answers_with_the_v4_browser_build(mirror: Mirror) -> None:
    bodies = set()
    for url in ("https://cdn.tailwindcss.com", "https://cdn.tailwindcss.com/?plugins=forms",
                "https://cdn.tailwindcss.com/3.4.1"):
        h = hit(mirror, url)
        assert h.pinned == "@tailwindcss/browser@4.3.4"
        assert h.content_type == "text/javascript; charset=utf-8"
        assert any("v4 browser build" in n for n in h.notes)
        bodies.add(h.body)
    (body,) = bodies
    build = (INSTALLED / "@tailwindcss" / "browser" / "dist" / "index.global.js").read_bytes()
    assert body.endswith(build) and b"window.tailwind" in body[:-len(build)]
    assert hit(mirror, "https://cdn.tailwindcss.com/3.4.1").spec == "tailwindcss play CDN 3.4.1"


# ---------------------------------------------------------------- Google Fonts
def faces(css: str) -> list[tuple[str, str, str, str]]:
    """(family, style, weight, src) of every @font-face."""
    return re.findall(r"font-family: '([^']+)';\s*font-style: (\w+);\s*font-weight: (\d+);"
                      r"[^}]*?src: ([^;]+);", css)


def test_google_fonts_css2(mirror: Mirror) -> None:
    url = ("https://fonts.googleapis.com/css2?family=Inter:wght@400;700"
           "&family=Roboto+Mono&display=swap")
    h = hit(mirror, url)
    assert h.content_type == "text/css; charset=utf-8" and h.path is None and h.notes == ()
    assert h.pinned == "@fontsource/inter@5.3.0, @fontsource/roboto-mono@5.3.0"
    found = faces(h.body.decode())
    assert [f[:3] for f in found] == [("Inter", "normal", "400"), ("Inter", "normal", "700"),
                                      ("Roboto Mono", "normal", "400")]
    for *_, src in found:  # the font files are answered too, from fontsource's latin woff2
        font = hit(mirror, re.search(r"url\(([^)]+)\)", src).group(1))
        assert font.content_type == "font/woff2" and "-latin-" in font.path.name
    assert "font-display: swap" in h.body.decode()


def test_google_fonts_legacy_css_italics_and_ranges(mirror: Mirror) -> None:
    h = hit(mirror, "https://fonts.googleapis.com/css?family=Open+Sans:400,700italic|Lato")
    assert [f[:3] for f in faces(h.body.decode())] == [
        ("Open Sans", "normal", "400"), ("Open Sans", "italic", "700"), ("Lato", "normal", "400")]
    assert "open-sans-latin-700-italic.woff2" in h.body.decode()
    h = hit(mirror, "https://fonts.googleapis.com/css2?family=Inter:ital,wght@0,100..900;1,400")
    weights = [(s, w) for _, s, w, _ in faces(h.body.decode())]
    assert weights == [("normal", str(w)) for w in range(100, 1000, 100)] + [("italic", "400")]
    # a weight fontsource lacks gets the nearest file it has (Lato has 300 and 400, not 350)
    h = hit(mirror, "https://fonts.googleapis.com/css2?family=Lato:wght@350")
    assert "lato-latin-300-normal.woff2" in h.body.decode() or "lato-latin-400" in h.body.decode()


def test_google_fonts_unknown_family_falls_back_to_a_local_font(mirror: Mirror) -> None:
    h = hit(mirror, "https://fonts.googleapis.com/css2?family=Foo+Sans:wght@400;700"
                    "&family=Bar+Serif&family=Space+Mono&family=Montserrat")
    assert h.notes == ("Foo Sans: not in the mirror, local fallback",
                       "Bar Serif: not in the mirror, local fallback",
                       "Space Mono: not in the mirror, local fallback")
    assert h.pinned == "@fontsource/montserrat@5.3.0"
    srcs = {(f, w): src for f, _, w, src in faces(h.body.decode())}
    assert srcs[("Foo Sans", "400")] == 'local("DejaVu Sans")'
    assert srcs[("Foo Sans", "700")] == 'local("DejaVu Sans Bold"), local("DejaVu Sans")'
    assert srcs[("Bar Serif", "400")] == 'local("DejaVu Serif")'
    assert srcs[("Space Mono", "400")] == 'local("DejaVu Sans Mono")'
    assert "Foo Sans: not in the mirror, local fallback" in h.answer


def test_more_google_families_are_mirrored(mirror: Mirror) -> None:
    url = ("https://fonts.googleapis.com/css2?family=Plus+Jakarta+Sans:wght@400;700"
           "&family=DM+Sans:ital,wght@0,400;1,700&family=JetBrains+Mono&family=Bebas+Neue"
           "&family=EB+Garamond:wght@500&family=IBM+Plex+Sans:wght@300..600&display=swap")
    h = hit(mirror, url)
    assert h.notes == ()
    assert h.pinned.split(", ") == [f"@fontsource/{f}@5.3.0" for f in (
        "plus-jakarta-sans", "dm-sans", "jetbrains-mono", "bebas-neue", "eb-garamond",
        "ibm-plex-sans")]
    found = faces(h.body.decode())
    assert [f[:3] for f in found] == [
        ("Plus Jakarta Sans", "normal", "400"), ("Plus Jakarta Sans", "normal", "700"),
        ("DM Sans", "normal", "400"), ("DM Sans", "italic", "700"),
        ("JetBrains Mono", "normal", "400"), ("Bebas Neue", "normal", "400"),
        ("EB Garamond", "normal", "500")] + [
        ("IBM Plex Sans", "normal", str(w)) for w in (300, 400, 500, 600)]
    for family, style, weight, src in found:  # each names its own latin woff2, answered
        font = hit(mirror, re.fullmatch(r"url\((\S+)\) format\('woff2'\)", src).group(1))
        slug = family.lower().replace(" ", "-")
        assert font.content_type == "font/woff2" and font.pinned.startswith(f"@fontsource/{slug}@")
        assert font.path.name == f"{slug}-latin-{weight}-{style}.woff2"


def test_every_mirrored_font_package_is_answered_by_its_google_name(mirror: Mirror) -> None:
    """Family -> package is a rule (lowercase, spaces -> dashes), not a table: a font package
    added to package.json is answered as is, and each must have latin woff2 files."""
    names = [n for n in mirror.packages if n.startswith("@fontsource/")]
    assert len(names) >= 48
    for name in names:
        family = name.partition("/")[2].replace("-", " ").title()  # "Dm Sans": case is free
        h = hit(mirror, f"https://fonts.googleapis.com/css2?family={family.replace(' ', '+')}")
        assert h.notes == () and h.pinned.startswith(f"{name}@"), (family, h.answer)
    assert hit(mirror, "https://fonts.googleapis.com/css?family=Source+Sans+Pro").pinned == \
        "@fontsource/source-sans-3@5.3.1"  # renamed by Google: the alias table


def test_google_material_icons_get_their_class(mirror: Mirror) -> None:
    css = hit(mirror, "https://fonts.googleapis.com/icon?family=Material+Icons").body.decode()
    assert faces(css)[0][:3] == ("Material Icons", "normal", "400")
    assert ".material-icons {" in css and "'liga'" in css


def test_google_fonts_misses(mirror: Mirror) -> None:
    assert "only the font files named by" in miss(mirror,
                                                  "https://fonts.gstatic.com/s/inter/v12/x.woff2")
    assert "no family" in miss(mirror, "https://fonts.googleapis.com/css2?display=swap")
    assert "not a Google Fonts stylesheet" in miss(mirror,
                                                   "https://fonts.googleapis.com/earlyaccess/x.css")
    # the CSS cannot be broken out of by a family name
    css = hit(mirror, "https://fonts.googleapis.com/css2?family=A'};x{y:z").body.decode()
    assert faces(css)[0][0] == "Axy" and "'}" not in css  # "z" was the axis list


# ---------------------------------------------------------------- versions and misses
@pytest.mark.parametrize("spec, pinned", [
    ("", "18.3.1"), ("@latest", "18.3.1"), ("@18", "18.3.1"), ("@^18.2", "18.3.1"),
    ("@18.2.0", "18.3.1"), ("@~18.0.0", "18.3.1"), ("@18.3.1", "18.3.1"), ("@>=18", "18.3.1"),
])
def test_versions_map_to_the_pinned_release_of_the_major(mirror: Mirror, spec: str,
                                                         pinned: str) -> None:
    assert hit(mirror, f"https://unpkg.com/react{spec}/umd/react.development.js").pinned == \
        f"react@{pinned}"


@pytest.mark.parametrize("url, reason", [
    ("https://unpkg.com/react@19/umd/react.production.min.js",
     "react@19: major not in the mirror (pinned: 18.3.1)"),
    ("https://unpkg.com/react@17.0.2/umd/react.production.min.js", "react@17.0.2: major"),
    ("https://cdn.jsdelivr.net/npm/bootstrap@2.3.2/css/bootstrap.css",
     "bootstrap@2.3.2: major not in the mirror (pinned: 5.3.9, 4.6.2, 3.4.1)"),
    ("https://cdnjs.cloudflare.com/ajax/libs/three.js/r150/three.min.js",
     "three@0.150.0: major not in the mirror (pinned: 0.128.0)"),  # 0.x: the minor is the major
    ("https://unpkg.com/bulma@0.8.0/css/bulma.css", "bulma@0.8.0: major"),
    ("https://unpkg.com/react@next", "react@next: major"),
    ("https://unpkg.com/bootstrap@5.3.0/dist/css/nope.css",
     "no such file in bootstrap@5.3.9: dist/css/nope.css"),
    ("https://unpkg.com/bootstrap@5/dist/css/", "no such file in bootstrap@5.3.9"),
    ("https://unpkg.com/bootstrap@5/scss/bootstrap.scss", "file type not served"),
    ("https://unpkg.com/react@18/umd/react.production.min.js?module", "?module"),
    ("https://cdn.jsdelivr.net/npm/chart.js@4.4.0/+esm", "+esm bundles are not mirrored"),
    ("https://cdn.jsdelivr.net/gh/user/repo@1.0/x.js", "only jsDelivr's /npm/"),
    ("https://cdnjs.cloudflare.com/ajax/libs/vue-router/4.2.5/vue-router.global.min.js",
     "library vue-router: not in the mirror"),
    ("https://unpkg.com/tailwindcss@3.4.1/dist/tailwind.min.css",
     "tailwindcss@3.4.1: major not in the mirror (pinned: 2.2.19): tailwindcss v3 and v4 have "
     "no browser file"),
    ("https://cdn.jsdelivr.net/npm/tailwindcss@4", "cdn.tailwindcss.com"),
    ("https://cdn.jsdelivr.net/npm/remixicon@3.5.0/fonts/remixicon.css", "remixicon@3.5.0: major"),
    ("https://unpkg.com/ionicons@7.1.0/dist/ionicons/ionicons.esm.js", "ionicons: not in"),
    ("https://cdnjs.cloudflare.com/ajax/libs/Chart.js/3.9.1/chart.min.js", "chart.js@3.9.1"),
    ("https://code.jquery.com/mobile/1.4.5/jquery.mobile-1.4.5.min.js", "code.jquery.com file"),
    ("https://code.jquery.com/ui/1.13.2/themes/base/nope.css",
     "no such file in jquery-ui@1.14.2: dist/themes/base/nope.css"),
    ("https://esm.sh/react@18", "ES module bundling CDNs are not mirrored"),
    ("https://unpkg.com/left-pad@1.3.0/index.js", "left-pad: not in the mirror"),
])
def test_misses_say_why(mirror: Mirror, url: str, reason: str) -> None:
    assert reason in miss(mirror, url)


@pytest.mark.parametrize("url", ["https://cdn.example.com/lib.js", "https://unpkg.co/react@18",
                                 "http://fonts.example.net/css?family=X", "data:text/css,x",
                                 "file:///etc/passwd", "ftp://unpkg.com/react@18", "not a url",
                                 "http://[::1/x"])
def test_other_hosts_are_not_the_mirrors_business(mirror: Mirror, url: str) -> None:
    assert mirror.resolve(url) is None


# ---------------------------------------------------------------- containment
@pytest.mark.parametrize("url", [
    "https://unpkg.com/react@18/../../../etc/passwd",
    "https://unpkg.com/react@18/%2e%2e/%2e%2e/package.json",
    "https://unpkg.com/react@18/%2E%2E%2F%2E%2E%2Fpackage.json",
    "https://unpkg.com/react@18/umd/..%2f..%2f..%2fjquery/package.json",
    "https://unpkg.com/react@18/%252e%252e/%252e%252e/package.json",
    "https://unpkg.com/react@18/..%5c..%5cpackage.json",
    "https://unpkg.com/react@18//etc/passwd",
    "https://unpkg.com/react@18/node_modules/loose-envify/index.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5/../../etc/passwd",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/3.6.0/../../../../etc/passwd",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/3.6.0/%2e%2e/%2e%2e/react18/package.json",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.5.2/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "https://use.fontawesome.com/releases/v5.15.4/../../../../etc/passwd",
    "https://fonts.gstatic.com/mirror/inter/..%2f..%2fpackage.json",
])
def test_no_path_leaves_its_package(mirror: Mirror, url: str) -> None:
    found = mirror.resolve(url)
    assert not isinstance(found, Hit), f"{url} answered with {found.path}"


@pytest.mark.parametrize("url", ["https://unpkg.com/d3-array@3/dist/d3-array.min.js",
                                 "https://cdn.jsdelivr.net/npm/@vue/shared@3",
                                 "https://unpkg.com/@kurkle/color/dist/color.min.js"])
def test_dependencies_npm_installed_are_not_served(mirror: Mirror, url: str) -> None:
    name = re.match(r"https://[^/]+(?:/npm)?/((?:@[^/@]+/)?[^/@]+)", url).group(1)
    assert (INSTALLED / name / "package.json").is_file()  # installed, only not listed
    assert miss(mirror, url) == f"{name}: not in the mirror"


def fake_mirror(root: Path, listed: dict[str, str], files: dict[str, str]) -> Path:
    write_site(root, {"package.json": json.dumps({"dependencies": listed}), **files})
    return root / "node_modules"


def test_symlinks_out_of_a_package_are_not_followed(tmp_path: Path) -> None:
    modules = fake_mirror(tmp_path / "m", {"foo": "1.0.0"}, {
        "node_modules/foo/package.json": '{"name": "foo", "version": "1.0.0", "main": "in.js"}',
        "node_modules/foo/in.js": "ok", "secret/key.js": "secret",
        "node_modules/bar/package.json": '{"name": "bar", "version": "1.0.0"}',
        "node_modules/bar/x.js": "not listed"})
    (modules / "foo" / "out.js").symlink_to(tmp_path / "m" / "secret" / "key.js")
    (modules / "foo" / "dir").symlink_to(tmp_path / "m" / "secret")
    (modules / "foo" / "inside.js").symlink_to(modules / "foo" / "in.js")
    m = Mirror.load(modules)
    assert hit(m, "https://unpkg.com/foo@1").path == (modules / "foo" / "in.js").resolve()
    assert hit(m, "https://unpkg.com/foo@1/inside.js").path.read_text() == "ok"
    for url in ("https://unpkg.com/foo@1/out.js", "https://unpkg.com/foo@1/dir/key.js",
                "https://unpkg.com/bar@1/x.js"):
        assert isinstance(m.resolve(url), Miss), url


def test_an_install_that_differs_from_its_pins_is_refused(tmp_path: Path) -> None:
    modules = fake_mirror(tmp_path, {"foo": "npm:foo@2.0.0"}, {
        "node_modules/foo/package.json": '{"name": "foo", "version": "1.0.0"}'})
    with pytest.raises(MirrorError, match="foo: installed 1.0.0, pinned npm:foo@2.0.0"):
        Mirror.load(modules)


# ---------------------------------------------------------------- in Chromium
CFG = BrowserConfig(nav_timeout_s=8.0, action_timeout_s=3.0, page_budget_s=20.0,
                    site_budget_s=60.0, settle_ms=100, max_pages=6, max_clicks_per_page=0,
                    max_forms_per_page=0)
UNTIL = ("<script>const until = async f => { for (let i = 0; i < 80 && !f(); i++) "
         "await new Promise(r => setTimeout(r, 25)); return f(); };</script>")
PAGES = {
    "react.html": UNTIL + """
<script src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script src="https://unpkg.com/@babel/standalone/babel.min.js"></script>
<div id="root"></div>
<script type="text/babel">
  function App() { const [n] = React.useState(3); return <h1 id="hello">Hello {n} times</h1>; }
  ReactDOM.createRoot(document.getElementById('root')).render(<App />);
</script>
<script>window.__probe = async () => ({text: (await until(() =>
  document.querySelector('#hello')))?.textContent, react: window.React?.version});</script>""",
    "bootstrap.html": UNTIL + """
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/bootstrap@5.3.0/dist/css/bootstrap.min.css">
<button id="b" class="btn btn-primary">Go</button>
<script src="https://cdn.jsdelivr.net/npm/bootstrap@5.3.0/dist/js/bootstrap.bundle.min.js"></script>
<script>window.__probe = async () => ({bootstrap: typeof bootstrap, modal: typeof
  bootstrap?.Modal, bg: getComputedStyle(document.getElementById('b')).backgroundColor});
</script>""",
    "tailwind.html": UNTIL + """
<script src="https://cdn.tailwindcss.com?plugins=forms"></script>
<script>tailwind.config = {darkMode: 'class', theme: {extend: {colors: {brand: {500: '#2563eb'}},
  fontFamily: {display: ['Playfair Display', 'serif']}}}};</script>
<div id="t" class="bg-blue-500 p-4">blue</div><div id="c" class="bg-brand-500">brand</div>
<script>const css = id => getComputedStyle(document.getElementById(id));
window.__probe = async () => { await until(() => css('c').backgroundColor !== 'rgba(0, 0, 0, 0)');
  return {blue: css('t').backgroundColor, brand: css('c').backgroundColor,
          pad: css('t').paddingTop}; };
</script>""",
    "fonts.html": UNTIL + """
<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter:wght@400;700&family=Foo+Sans&display=swap">
<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Plus+Jakarta+Sans:wght@700">
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.4.0/css/all.min.css">
<p style="font-family: Inter; font-weight: 700">Inter bold</p><i class="fa-solid fa-house"></i>
<p style="font-family: 'Plus Jakarta Sans'; font-weight: 700">Jakarta bold</p>
<p style="font-family: 'Foo Sans'">Foo</p>
<script>window.__probe = async () => { await document.fonts.load('700 16px Inter');
  await document.fonts.load('700 16px "Plus Jakarta Sans"');
  await document.fonts.ready; return {loaded: [...document.fonts].filter(f => f.status === 'loaded')
    .map(f => `${f.family.replace(/"/g, '')} ${f.weight}`).sort()}; };</script>""",
    "icons.html": """
<script>window.__errors = []; addEventListener('error', e => __errors.push(String(e.message)));
</script>
<link rel="stylesheet" href="https://unpkg.com/tailwindcss@^2/dist/tailwind.min.css">
<script src="https://unpkg.com/lucide@latest"></script>
<nav id="n" class="flex items-center bg-blue-500 p-4"><i data-lucide="menu"></i>Menu</nav>
<script>lucide.createIcons(); const nav = getComputedStyle(document.getElementById('n'));
window.__probe = async () => ({icon: document.querySelector('#n svg')?.getAttribute('class'),
  bg: nav.backgroundColor, pad: nav.paddingTop, display: nav.display, errors: __errors});
</script>""",
}
INDEX = ("<!doctype html><title>CDN</title><h1>Libraries from CDNs</h1>"
         + "".join(f'<a href="{p}">{p}</a> ' for p in PAGES)
         + '<script src="https://cdn.jsdelivr.net/npm/bootstrap@2/dist/js/bootstrap.js"></script>'
         + '<script src="https://cdn.example.com/lib.js"></script>'
         + "<script>fetch('https://unpkg.com/react@18/umd/react.development.js',"
           " {method: 'POST'}).catch(() => {});</script>")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pages = {name: f"<!doctype html><html><head><title>{name}</title></head><body>{body}"
                   "</body></html>" for name, body in PAGES.items()}
    return write_site(tmp_path_factory.mktemp("cdn-site"), {"index.html": INDEX, **pages})


@pytest.fixture(scope="module")
def browser():
    with Browser(CFG) as b:
        yield b


@pytest.mark.browser
@pytest.mark.usefixtures("mirror")  # missing: fails saying to run setup.sh
def test_pages_using_cdn_libraries_work_offline(browser: Browser, site: Path) -> None:
    out = browser.inspect_pages(site, [f"/{p}" for p in PAGES],
                                "async () => window.__probe ? await window.__probe() : null",
                                shoot=False)
    got = {r["path"]: r["desktop"] for r in out}
    assert [r["error"] for r in out] == [None] * len(PAGES)
    assert got["/react.html"] == {"text": "Hello 3 times", "react": "18.3.1"}
    assert got["/bootstrap.html"] == {"bootstrap": "object", "modal": "function",
                                      "bg": "rgb(13, 110, 253)"}
    tw = got["/tailwind.html"]
    assert tw["blue"] not in ("rgba(0, 0, 0, 0)", "transparent") and tw["pad"] == "16px"
    assert tw["brand"] == "rgb(37, 99, 235)"  # the v3 tailwind.config, mapped onto v4
    assert {"Inter 700", "Plus Jakarta Sans 700", "Font Awesome 6 Free 900"} <= \
        set(got["/fonts.html"]["loaded"])


@pytest.mark.browser
@pytest.mark.usefixtures("mirror")
def test_a_page_with_lucide_icons_and_tailwind2_css_renders(browser: Browser,
                                                             site: Path) -> None:
    [out] = browser.inspect_pages(site, ["/icons.html"], "async () => await window.__probe()",
                                  shoot=False)
    assert out["error"] is None
    assert out["desktop"] == {"icon": "lucide lucide-menu", "bg": "rgb(59, 130, 246)",
                              "pad": "16px", "display": "flex", "errors": []}


@pytest.mark.browser
@pytest.mark.usefixtures("mirror")
def test_the_visit_records_what_the_mirror_answered_and_refused(browser: Browser,
                                                                site: Path) -> None:
    visit = browser.visit_site(site)
    assert visit.error is None and len(visit.pages) == 1 + len(PAGES)
    assert all(p.page_errors == [] for p in visit.pages), [p.page_errors for p in visit.pages]
    mirrored = set(visit.mirrored_requests)
    assert {"GET https://unpkg.com/react@18/umd/react.production.min.js -> react@18.3.1",
            "GET https://cdn.jsdelivr.net/npm/bootstrap@5.3.0/dist/css/bootstrap.min.css"
            " -> bootstrap@5.3.9",
            "GET https://cdn.tailwindcss.com/?plugins=forms -> @tailwindcss/browser@4.3.4"
            " (the v4 browser build answers the v3 play CDN)",
            "GET https://fonts.googleapis.com/css2?family=Inter:wght@400;700&family=Foo+Sans"
            "&display=swap -> @fontsource/inter@5.3.0 (Foo Sans: not in the mirror, local "
            "fallback)"} <= mirrored
    assert any(m.startswith("GET https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.4.0/"
                            "webfonts/fa-solid-900.woff2") for m in mirrored)
    assert any(m.startswith("GET https://fonts.gstatic.com/mirror/inter/inter-latin-700")
               for m in mirrored)
    assert sorted(visit.blocked_requests) == [
        "GET https://cdn.example.com/lib.js",  # not a CDN the mirror knows: as before
        "GET https://cdn.jsdelivr.net/npm/bootstrap@2/dist/js/bootstrap.js (not in mirror: "
        "bootstrap@2: major not in the mirror (pinned: 5.3.9, 4.6.2, 3.4.1))",
        "POST https://unpkg.com/react@18/umd/react.development.js"]  # only GET is answered


@pytest.mark.browser
def test_with_the_mirror_off_cdn_urls_stay_blocked(browser: Browser, site: Path) -> None:
    # One Playwright per thread: the module's browser, with the mirror switched off (read per
    # sandbox), instead of a second Browser.
    browser.cfg = dataclasses.replace(CFG, cdn_mirror=False)
    try:
        visit = browser.visit_site(site)
    finally:
        browser.cfg = CFG
    assert visit.mirrored_requests == []
    assert "GET https://unpkg.com/react@18/umd/react.production.min.js" in visit.blocked_requests
    assert "GET https://cdn.jsdelivr.net/npm/bootstrap@2/dist/js/bootstrap.js" in \
        visit.blocked_requests  # no reason: the mirror was not asked


@pytest.mark.browser
def test_a_missing_mirror_is_a_browser_error(site: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, cdn_mirror_dir=str(tmp_path / "none"))
    with Browser(cfg) as b, pytest.raises(BrowserError, match=r"scripts/setup\.sh"):
        b.visit_site(site)
