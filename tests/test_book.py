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
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from vitscope.profiles import load_profile

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
COPY = ["_config.yml", "book", "notebooks", "profiles", "data_manifests"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the book sources with its own cache; VITSCOPE_HOME points the package (and kernels) at it."""
    root = tmp_path_factory.mktemp("project")
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("generated", ".ipynb_checkpoints"))
        else:
            shutil.copy(src, root / name)
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
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    injected = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "random-b" in "".join(injected["source"])
    assert (tmp_path / "figures" / "attention_distance_heads_random-b.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def site(project):
    from vitscope.book import build_book

    return build_book("demo", root=project)


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
    assert warned == [f"book/generated/tm_4_3_attention_distance/{m}.html" for m in random_models]


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


def test_site_renders_offline_in_chromium(site, tmp_path):
    exe = _chromium()
    pages = sorted((site / "book").rglob("*.html"))
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
