"""End to end: a notebook through papermill, the whole demo book, and the built site in headless Chromium.

These run the real pipeline on the demo profile in a temporary copy of the project, so the working tree is
never touched. Marked ``slow``; ``make test`` runs them, ``make test-fast`` skips them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from vitscope.book.build import copy_sources
from vitscope.profiles import load_profile

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the book sources with its own cache; VITSCOPE_HOME points the package (and kernels) at it."""
    root = copy_sources(tmp_path_factory.mktemp("project"), REPO)
    old = {k: os.environ.get(k) for k in ("VITSCOPE_HOME", "VITSCOPE_CACHE")}
    os.environ["VITSCOPE_HOME"], os.environ["VITSCOPE_CACHE"] = str(root), str(root / "cache")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def test_papermill_by_hand(project, tmp_path):
    import papermill as pm

    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(project / "notebooks" / "tm_4_3_attention_distance.ipynb"), str(out),
                        parameters={"model": "random-b", "profile": "demo"}, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    nb = json.loads(out.read_text())
    outputs = _outputs(nb)
    assert not [o for o in outputs if o["output_type"] == "error"]
    figures = ["".join(o["data"]["text/markdown"]) for o in outputs if "text/markdown" in o.get("data", {})]
    assert sum(f.count("{figure}") for f in figures) >= 2          # numbered figures, shown through MyST
    injected = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "random-b" in "".join(injected["source"])
    assert (tmp_path / "figures" / "attention_distance_heads_random-b.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def site(project):
    from vitscope.book import build_book

    html, outcomes = build_book("demo", root=project, n_jobs=2)     # as `make book` does on 2 cores
    failed = [f"{o.job}: {o.error}" for o in outcomes if o.status == "failed"]
    assert not failed, "pages failed to execute:\n" + "\n".join(failed)
    return html


def test_book_has_every_page(site, project):
    profile = load_profile("demo")
    for model in profile.models:
        page = site / "book" / "generated" / "tm_4_3_attention_distance" / f"{model}.html"
        assert page.is_file(), page
        assert f"{model}" in page.read_text()
    for page in ("om_2_1_cka", "tm_4_3_overview", "about_models", "about_zoo"):
        assert (site / "book" / "generated" / f"{page}.html").is_file(), page
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax must ship with the site"
    toc = (project / "_toc.yml").read_text()
    assert all(m in toc for m in profile.models)


RANDOM_WARNING = "(untrained, seeded initialisation): these numbers show the pipeline at work"


def test_only_the_random_baseline_is_called_random(site):
    """The demo runs on the trained mini-zoo: the random-weights warning appears on the baseline's own page only."""
    profile = load_profile("demo")
    random_models = [m for m in profile.models if m.startswith("random-")]
    assert random_models and len(random_models) < len(profile.models)
    warned = sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if RANDOM_WARNING in p.read_text())
    from vitscope.book.build import PAGES, _flatten

    per_model = sorted(p.notebook for p in _flatten(PAGES) if p.per_model)
    assert warned == sorted(f"book/generated/{nb}/{m}.html" for nb in per_model for m in random_models)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.scripts, self._in_script, self.text = [], [], False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "script":
            self._in_script = True
            if a.get("src"):
                self.scripts.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if not self._in_script:
            self.text.append(data)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("VITSCOPE_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (VITSCOPE_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    return exe


def _dump_dom(exe: str, page: Path, tmp_path: Path) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


PROBE_SUFFIX = ".vitscope-probe.html"


def book_pages(site: Path) -> list[Path]:
    """The built site's pages under ``book/``, sorted, without the measuring copies :func:`_measure` writes (a run
    killed mid-page leaves one behind; it is not a page, and the next run would remove it while measuring its twin)."""
    return sorted(p for p in (site / "book").rglob("*.html") if not p.name.endswith(PROBE_SUFFIX))


def test_site_renders_offline_in_chromium(site, tmp_path):
    exe = _chromium()
    pages = book_pages(site)
    redirect = re.search(r'url=([^"]+)"', (site / "index.html").read_text())
    assert redirect and (site / redirect.group(1)).is_file(), "index.html must lead to the intro page"
    math_pages = 0
    for page in pages:
        dom = _dump_dom(exe, page, tmp_path)
        parsed = _Collector()
        parsed.feed(dom)
        for src in parsed.images + parsed.scripts:
            url = urlparse(src)
            if url.scheme in ("http", "https"):
                pytest.fail(f"{page.name} loads {src} from the network: the site must work offline")
            if url.scheme in ("", "file") and not src.startswith("data:"):
                target = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path))
                assert target.is_file() and target.stat().st_size > 0, f"{page.name}: missing {src}"
        text = "".join(parsed.text)
        assert "Traceback" not in text, f"{page.name} shows a traceback"
        assert not re.search(r'class="[^"]*output (traceback|error|stderr)', dom), f"{page.name} shows an error output"
        assert not re.search(r"\\(frac|sum|operatorname|mathrm)\b", text), f"{page.name}: unrendered TeX"
        math_pages += "mjx-container" in dom
    assert math_pages >= 2, "MathJax rendered no math: is it loaded offline?"


# ------------------------------------------------------------------ reading the site as a reader: errors and layout

#: The reader's browser window: a common laptop screen. Figures and tables are judged at the content column's width
#: there; the theme shows both sidebars at this width, so the column is as narrow as it gets on a desktop.
READER_WINDOW = (1280, 900)
#: The smallest tick label, in CSS pixels on the page, that a reader can read without zooming.
MIN_TICK_LABEL_PX = 10.0

# Injected first in <head> of a copy of the page, before any of the page's scripts: records every uncaught error
# (a SyntaxError in an inline script included), every console.error, every failed resource load and every unhandled
# promise rejection, i.e. what a reader would see in the browser console.
_ERROR_COLLECTOR = """<script>
window.__vitscopeErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { window.__vitscopeErrors.push("failed to load " + (t.src || t.href)); }
  else { window.__vitscopeErrors.push((e.message || "error") + " at " + (e.filename || "?") + ":" + (e.lineno || 0)); }
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__vitscopeErrors.push("unhandled promise rejection: " + e.reason);
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__vitscopeErrors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
</script>"""

# Injected last in <body>: after the load event (every image decoded), measure the content column, each visible
# image (natural vs displayed width) and each visible table, and write it all as JSON into the DOM for --dump-dom.
_MEASURER = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  var style = getComputedStyle(article);
  var column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  function visible(el) { return el.offsetParent !== null && el.getBoundingClientRect().width > 0; }
  var images = Array.prototype.filter.call(article.querySelectorAll("img"), visible).map(function (img) {
    return {src: img.getAttribute("src"), alt: img.getAttribute("alt"), natural: img.naturalWidth,
            shown: img.getBoundingClientRect().width};
  });
  var tables = Array.prototype.filter.call(article.querySelectorAll("table"), visible).map(function (t) {
    var head = t.querySelector("th, td");
    // a table styled display:block + overflow:auto is clipped to the column; its scrollWidth is what it needs
    return {width: Math.max(t.getBoundingClientRect().width, t.scrollWidth),
            first_cell: head ? head.textContent.trim().slice(0, 40) : ""};
  });
  var out = document.createElement("pre");
  out.id = "vitscope-measure";
  out.textContent = JSON.stringify({column: column, images: images, tables: tables, errors: window.__vitscopeErrors});
  document.body.appendChild(out);
}, 0); });
</script>"""


def _measure(exe: str, page: Path, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium at the reader's window size and return what a reader would meet:
    ``{"column": px, "images": [...], "tables": [...], "errors": [...]}``, plus ``"console"``: the "Uncaught" lines of
    Chromium's own console log (a second net under the injected collector).

    The page cannot be scripted from outside without the DevTools protocol, so a copy with two scripts injected is
    opened next to the original (same folder: every relative link resolves the same), and its DOM is dumped.
    """
    html = page.read_text()
    head = re.search(r"<head[^>]*>", html)
    assert head and "</body>" in html, f"{page.name}: no <head> or </body>"
    probe = page.with_name(page.stem + PROBE_SUFFIX)
    probe.write_text(html[:head.end()] + _ERROR_COLLECTOR + html[head.end():].replace("</body>", _MEASURER + "</body>"))
    try:
        width, height = READER_WINDOW
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--window-size={width},{height}", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
               f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",   # one profile per run: no lock to wait on
               "--virtual-time-budget=15000", "--dump-dom",
               probe.as_uri()]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="vitscope-measure"[^>]*>(.*?)</pre>', run.stdout, re.DOTALL)   # the theme adds tabindex
    assert found, f"{page.name}: the measuring script did not run (no load event within the time budget?)"
    result = json.loads(unescape(found.group(1)))
    result["console"] = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return result


def reader_problems(measured: dict, name: str, figure_dpi: float, tick_label_pt: float) -> list[str]:
    """Everything on one page a reader would trip over, one line each (empty: the page passes).

    - any console error;
    - a figure whose tick labels render below :data:`MIN_TICK_LABEL_PX`: a PNG drawn at ``figure_dpi`` with
      ``tick_label_pt`` labels shows them at ``tick_label_pt * figure_dpi / 72 * displayed / natural`` CSS pixels;
    - a table wider than the content column (its columns hide behind a scrollbar or run off the page).
    """
    problems = [f"{name}: console error: {e}" for e in measured["errors"]]
    problems += [f"{name}: console: {line.split('CONSOLE', 1)[1]}" for line in measured["console"]]
    for img in measured["images"]:
        if not img["natural"]:
            problems.append(f"{name}: image {img['src']} did not load")
            continue
        tick_px = tick_label_pt * figure_dpi / 72 * img["shown"] / img["natural"]
        if tick_px < MIN_TICK_LABEL_PX:
            problems.append(f"{name}: figure {img['src']} is shown at {img['shown']:.0f} of its {img['natural']} px, "
                            f"so its tick labels are {tick_px:.1f} px (< {MIN_TICK_LABEL_PX:g}); draw it at most "
                            f"{measured['column']:.0f} px wide (plots.common) so it shows at full size")
    for table in measured["tables"]:
        if table["width"] > measured["column"] + 1:
            problems.append(f"{name}: table starting {table['first_cell']!r} is {table['width']:.0f} px wide, wider "
                            f"than the {measured['column']:.0f} px content column; drop or shorten columns")
    return problems


def test_reader_problems_are_found():
    """The checks can fail: a hand-made measurement with each problem is reported, a clean one is not."""
    clean = {"column": 700.0, "errors": [], "console": [], "tables": [{"width": 700.0, "first_cell": "model"}],
             "images": [{"src": "a.png", "alt": "", "natural": 700, "shown": 700.0}]}
    assert reader_problems(clean, "p", 100, 9) == []
    # 9 pt at 100 dpi is 12.5 px at full size; shown at 70 % it is 8.75 px
    small = {**clean, "images": [{"src": "a.png", "alt": "", "natural": 1000, "shown": 700.0}]}
    assert any("8.8 px" in p for p in reader_problems(small, "p", 100, 9))
    wide = {**clean, "tables": [{"width": 900.0, "first_cell": "model"}]}
    assert any("900 px wide" in p for p in reader_problems(wide, "p", 100, 9))
    broken = {**clean, "errors": ["Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared"]}
    assert any("THEBE_JS_URL" in p for p in reader_problems(broken, "p", 100, 9))


def test_every_page_passes_the_reader_checks(site, tmp_path):
    """No console error, readable tick labels and tables within the column, on every page of the built site."""
    from vitscope.plots.common import FIGURE_DPI, TICK_LABEL_PT

    exe = _chromium()
    problems, figures = [], 0
    for page in book_pages(site):
        measured = _measure(exe, page, tmp_path)
        figures += len(measured["images"])
        problems += reader_problems(measured, str(page.relative_to(site)), FIGURE_DPI, TICK_LABEL_PT)
    assert figures >= 5, "the measuring script saw almost no figures: is it looking at the right element?"
    assert not problems, f"{len(problems)} problem(s) a reader would meet:\n" + "\n".join(problems)


def test_browser_check_catches_a_console_error(tmp_path):
    """The console check works in this browser: a page with the duplicated ``const`` that sphinx-thebe used to emit
    (a SyntaxError) is reported, the same page without it is not."""
    exe = _chromium()
    line = '<script>const THEBE_JS_URL = "x"</script>'
    for copies, expect_error in ((2, True), (1, False)):
        page = tmp_path / f"page{copies}.html"
        page.write_text(f"<html><head>{line * copies}</head><body><article class='bd-article'>"
                        "<p>text</p></article></body></html>")
        measured = _measure(exe, page, tmp_path)
        problems = reader_problems(measured, page.name, 100, 9)
        assert bool(problems) == expect_error, problems
        if expect_error:
            assert any("THEBE_JS_URL" in p for p in problems)


@pytest.mark.parametrize("page", sorted((REPO / "book" / "exercises").glob("*.md")), ids=lambda p: p.stem)
def test_exercise_solutions_run(page, tmp_path):
    """Every Python block of an exercise page runs from the repository root, as the page tells readers, and
    prints its answer: solutions cannot rot when the library changes."""
    import sys

    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    for i, code in enumerate(blocks):
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{page.name}, Python block {i + 1}:\n{code}\n{run.stderr[-2000:]}"
        assert run.stdout.strip(), f"{page.name}, Python block {i + 1} prints nothing"
