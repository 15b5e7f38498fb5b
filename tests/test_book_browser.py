"""The built book, opened in a real browser (Debian's headless Chromium through Playwright).

Runs after the book build (`bash .ci/test` builds it first when _build/html is missing or stale). Serves
_build/html on localhost, opens the intro and chapter 1, and checks what a reader would see: no Python
traceback in any cell output, every image loaded, the widget views present (and rendered, when the
ipywidgets scripts were vendored by .ci/book), and launch links that point to the configured repository.
A full-page screenshot of each page is saved under artifacts/.

Without the built book the tests skip, unless FAIRDARTS_REQUIRE_BOOK=1 (set by .ci/test), where they fail.
"""
from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("FAIRDARTS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
BRANCH = CONFIG["repository"].get("branch", "main")
OWNER_REPO = urlparse(REPO_URL).path.strip("/")
VENDORED = (ROOT / "book" / "_static" / "vendor" / "embed-amd.js").is_file()
MATHJAX_VENDORED = (ROOT / "book" / "_static" / "vendor" / "mathjax" / "tex-mml-chtml.js").is_file()

PAGES = {
    "intro": "book/intro.html",
    "chapter1": "book/01_darts_in_a_nutshell.html",
    "chapter2": "book/02_the_collapse.html",
    "chapter3": "book/03_why_it_happens.html",
    "chapter4": "book/04_the_discretization_gap.html",
    "chapter5": "book/05_a_full_search.html",
    "chapter6": "book/06_retraining_and_evaluation.html",
    "benchmarks": "book/benchmarks.html",
}
WIDGET_SELECTOR = {"chapter1": ".widget-slider", "chapter2": ".widget-slider", "chapter3": ".widget-toggle-buttons",
                   "chapter4": ".widget-toggle-buttons", "chapter5": ".widget-dropdown",
                   "chapter6": ".widget-dropdown"}
"""What each page's saved widget view renders once its JavaScript has run."""
NOTEBOOK_PAGES = {"chapter1": "book/01_darts_in_a_nutshell.ipynb", "chapter2": "book/02_the_collapse.ipynb",
                  "chapter3": "book/03_why_it_happens.ipynb", "chapter4": "book/04_the_discretization_gap.ipynb",
                  "chapter5": "book/05_a_full_search.ipynb", "chapter6": "book/06_retraining_and_evaluation.ipynb",
                  "benchmarks": "book/benchmarks.ipynb"}


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("FAIRDARTS_REQUIRE_BOOK") == "1":
        pytest.fail(why)
    pytest.skip(why)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def server():
    _require((HTML / PAGES["chapter1"]).is_file(), "the book is not built: run `bash .ci/book` first")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    _require(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _open(browser, server, name):
    """Open a page with every request outside localhost refused; return (page, page errors, blocked URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked, errors = [], []

    def route(r):
        host = urlparse(r.request.url).hostname
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/{PAGES[name]}", wait_until="load", timeout=60_000)
    # Scroll through the page so that lazily loaded images load too, then let the network settle.
    height = page.evaluate("document.body.scrollHeight")
    for y in range(0, height + 900, 900):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(50)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_load_state("networkidle", timeout=30_000)
    return context, page, errors, blocked


@pytest.fixture(scope="module")
def pages(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    opened = {}
    for name in PAGES:
        context, page, errors, blocked = _open(browser, server, name)
        if name in WIDGET_SELECTOR and VENDORED:
            page.wait_for_selector(WIDGET_SELECTOR[name], timeout=30_000)
            page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"book-{name}.png"), full_page=True)
        opened[name] = (page, errors, blocked)
    yield opened
    for page, _, _ in opened.values():
        page.context.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_no_traceback_in_outputs(pages, name):
    page, _, _ = pages[name]
    assert page.locator(".traceback, .output.error").count() == 0, f"{name}: an error output is shown"
    text = "\n".join(page.locator(".cell_output").all_inner_texts())
    for marker in ("Traceback (most recent call last)", "Error Traceback", "---------------------------------------------------------------------------"):
        assert marker not in text, f"{name}: a cell output contains a Python traceback"


@pytest.mark.parametrize("name", list(PAGES))
def test_every_image_loaded(pages, name):
    page, _, _ = pages[name]
    images = page.evaluate("""() => Array.from(document.images).map(i => ({
        src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0, visible: i.getClientRects().length > 0}))""")
    broken = [i["src"][:120] for i in images if not i["ok"]]
    assert not broken, f"{name}: images that did not load: {broken}"
    if name == "chapter1":
        assert len(images) >= 6, f"chapter 1 should show its figures and drawings, found {len(images)} images"
    if name == "chapter2":
        assert len(images) >= 10, f"chapter 2 should show its plots and cell drawings, found {len(images)} images"
    if name == "chapter3":
        assert len(images) >= 8, f"chapter 3 should show its plots, found {len(images)} images"
    if name == "chapter4":
        assert len(images) >= 5, f"chapter 4 should show its plots, found {len(images)} images"
    if name == "benchmarks":
        assert len(images) >= 1, "the benchmarks page should show the speedup by shape"


def test_chapter1_widget_view(pages):
    page, errors, _ = pages["chapter1"]
    assert page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count() == 1, \
        "the widget state was not saved with the executed notebook"
    assert page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count() >= 1
    if VENDORED:  # the saved view renders without any network access
        assert page.locator(".widget-slider").count() >= 8, "the edge explorer's sliders are not rendered"
        ok = page.evaluate("""() => Array.from(document.querySelectorAll('.jupyter-widgets img, img.widget-image'))
                              .some(i => i.naturalWidth > 0)""")
        assert ok, "the edge explorer's bar plot is not rendered"
        assert "keeps" in page.locator(".widget-html").all_inner_texts().__str__()
    assert not [e for e in errors if "widget" in e.lower()], f"widget errors in the page: {errors}"


def _saved_widget_view(page, errors, controls, image: str) -> None:
    """The widget state was saved with the notebook; where the widget JavaScript is vendored, every
    ``(selector, at least, what)`` of ``controls`` renders offline, and so does the figure ``image`` names."""
    assert page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count() == 1, \
        "the widget state was not saved with the executed notebook"
    if VENDORED:
        for selector, least, what in controls:
            assert page.locator(selector).count() >= least, f"{what} is not rendered"
        ok = page.evaluate("""() => Array.from(document.querySelectorAll('.jupyter-widgets img, img.widget-image'))
                              .some(i => i.naturalWidth > 0)""")
        assert ok, f"{image} is not rendered"
    assert not [e for e in errors if "widget" in e.lower()], f"widget errors in the page: {errors}"


def test_chapter2_epoch_explorer_view(pages):
    page, errors, _ = pages["chapter2"]
    assert page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count() == 1, \
        "the widget state was not saved with the executed notebook"
    assert page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count() >= 1
    if VENDORED:  # the saved view renders without any network access: slider, cell drawing, weight bars
        assert page.locator(".widget-slider").count() >= 1, "the epoch slider is not rendered"
        assert page.locator(".widget-html svg").count() >= 1, "the explorer's cell drawing is not rendered"
        ok = page.evaluate("""() => Array.from(document.querySelectorAll('.jupyter-widgets img, img.widget-image'))
                              .some(i => i.naturalWidth > 0)""")
        assert ok, "the explorer's weight bars are not rendered"
        assert "skip_connect" in " ".join(page.locator(".widget-html").all_inner_texts())
    assert not [e for e in errors if "widget" in e.lower()], f"widget errors in the page: {errors}"
    text = page.locator("main").inner_text()
    for heading in ("The collapse, live", "Thirty epochs, several seeds", "What the collapse costs", "Explorer",
                    "Why depth matters", "The DARTS space"):
        assert heading in text, f"chapter 2 lacks its section {heading!r}"
    assert text.count("skip edges in the derived cell, epoch by epoch") >= 2, "the live searches' printout is missing"
    assert "|+|" in text, "no NAS-Bench-201 cell string is shown"


def test_chapter3_condition_explorer_view(pages):
    page, errors, _ = pages["chapter3"]
    _saved_widget_view(page, errors, [(".widget-toggle-buttons", 1, "the relaxation toggle"),
                                      (".widget-checkbox", 2, "the noise / skip checkboxes")], "the explorer's figure")
    text = page.locator("main").inner_text()
    for heading in ("The result", "The two conditions", "Break the exclusive competition", "Break the unfair advantage",
                    "Take skip away", "What skips cost", "The collapse indicator", "Explorer"):
        assert heading in text, f"chapter 3 lacks its section {heading!r}"
    assert "Hessian eigenvalue" in text


def test_chapter4_gap_explorer_view(pages):
    page, errors, _ = pages["chapter4"]
    _saved_widget_view(page, errors, [(".widget-toggle-buttons", 1, "the zero-one setting buttons"),
                                      (".widget-slider", 1, "the threshold slider")], "the explorer's figure")
    if VENDORED:
        assert "held-out accuracy" in " ".join(page.locator(".widget-html").all_inner_texts())
    text = page.locator("main").inner_text()
    for heading in ("The result", "The gap in a worked example", "Live: the gap during a search",
                    "The final weights, side by side", "The cells, retrained", "Explorer"):
        assert heading in text, f"chapter 4 lacks its section {heading!r}"
    assert "the authors'" in text and "rounded" in text


def test_chapter5_history_and_threshold_explorer_views(pages):
    page, errors, _ = pages["chapter5"]
    _saved_widget_view(page, errors, [(".widget-dropdown", 1, "the edge selector"),
                                      (".widget-slider", 2, "the epoch and threshold sliders")], "the edge history figure")
    if VENDORED:
        assert page.locator(".widget-html svg").count() >= 2, "the explorers' cell drawings are not rendered"
        shown = " ".join(page.locator(".widget-html").all_inner_texts())
        assert "ends strongest" in shown and "live nodes" in shown
    text = page.locator("main").inner_text()
    for heading in ("Configure a search", "Run it", "Stop it and resume it", "Read the history",
                    "Which edges survive the threshold", "The cells beside the published ones", "What a search costs",
                    "Your own data", "The command line, step by step"):
        assert heading in text, f"chapter 5 lacks its section {heading!r}"
    assert "bit-identical to the uninterrupted run: True" in text, "the resumed search is not shown equal to its twin"


def test_chapter6_retrainings_zoo_and_checkpoints(pages):
    page, errors, _ = pages["chapter6"]
    assert page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count() == 1, \
        "the widget state was not saved with the executed notebook"
    assert not [e for e in errors if "widget" in e.lower()], f"widget errors in the page: {errors}"
    if VENDORED:  # the saved view renders offline: the cell selector and the chosen cell's card
        assert page.locator(".widget-dropdown").count() >= 1, "the cell selector is not rendered"
        assert page.locator(".widget-html svg").count() >= 1, "the zoo browser's drawing is not rendered"
        assert "FLOPs" in " ".join(page.locator(".widget-html").all_inner_texts())
    text = page.locator("main").inner_text().replace("\u2019", "'")  # Sphinx typesets ' as a curly quote
    for heading in ("From a cell to a network", "A short retraining, live", "The recorded retrainings, three seeds each",
                    "The published cells: what they cost", "The authors' released networks", "The paper's setting",
                    "Exercises"):
        assert heading in text, f"chapter 6 lacks its section {heading!r}"
    for cell in ("Fair DARTS, cpu-cell", "DARTS, darts-cpu-cell", "FairDARTS_a", "DARTS_V2", "random cell",
                 "NB201, collapsed (DARTS)", "NB201, Fair DARTS"):
        assert cell in text, f"chapter 6's retraining table lacks {cell}"
    assert text.count("± ") >= 7, "the retraining table shows no mean ± std"
    assert "FlopCounterMode" in text and "published FLOPs" in text, "the zoo table is missing"
    assert "fairdarts evaluate --checkpoint FairDARTS-a.tar --arch FairDARTS_a" in text
    assert "their layout: accuracy" in text, "the checkpoint round trip is not shown"
    assert page.locator(".cell_output svg, .cell_output img").count() >= 3, "the network drawings or the plot are missing"


def test_chapter1_has_a_static_figure_for_the_explorer(pages):
    page, _, _ = pages["chapter1"]
    # Every figure of the chapter is an image output of a cell; the explorer's static figure is one of them.
    n = page.locator(".cell_output img").count()
    assert n >= 5, f"chapter 1 shows {n} image outputs; expected its drawings and static figures"


@pytest.mark.parametrize("name", [n for n in PAGES if n not in ("chapter5", "chapter6", "benchmarks")])  # no equations
def test_math_is_typeset(pages, name):
    page, _, _ = pages[name]
    if not MATHJAX_VENDORED:
        pytest.skip("MathJax is not vendored (no npm at build time): the equations need the CDN")
    page.wait_for_selector("mjx-container", timeout=30_000)
    assert page.locator("mjx-container").count() >= 3, f"{name}: the equations were not typeset"


@pytest.mark.parametrize("name", list(PAGES))
def test_repository_links(pages, name):
    page, _, _ = pages[name]
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    github = [h for h in hrefs if "github.com" in h]
    assert REPO_URL in github, f"{name}: no link to the repository {REPO_URL}"
    foreign = [h for h in github if not h.startswith(REPO_URL)]
    assert not foreign, f"{name}: GitHub links to another repository: {foreign}"


@pytest.mark.parametrize("name", list(NOTEBOOK_PAGES))
def test_launch_links_point_to_the_repository(pages, name):
    page, _, _ = pages[name]
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    notebook = NOTEBOOK_PAGES[name]
    colab = [h for h in hrefs if "colab.research.google.com" in h]
    binder = [h for h in hrefs if "mybinder.org" in h]
    assert colab == [f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/{notebook}"], colab
    assert len(binder) == 1 and binder[0].startswith(f"https://mybinder.org/v2/gh/{OWNER_REPO}/{BRANCH}?"), binder
    assert notebook in binder[0].replace("%2F", "/")
    downloads = [h for h in hrefs if h.endswith(".ipynb") and "_sources" in h]
    assert downloads, f"{name}: no download link for the notebook"


def test_screenshots_saved(pages):
    for name in PAGES:
        shot = ARTIFACTS / f"book-{name}.png"
        assert shot.is_file() and shot.stat().st_size > 10_000, shot

