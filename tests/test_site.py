"""The website: it builds with no warnings, and in a real browser with the network
cut off every page renders its mathematics and images with no console errors.

The browser is Debian's chromium driven headless by Playwright (never a browser
that Playwright downloads). Screenshots are saved to _build/screenshots/.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("BNLESSONS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


SITE_LOG = ROOT / "_build" / "site-build.log"  # written by .ci/build-site and by this module
SOURCES = ("book", "_config.yml", "_toc.yml")


def newest_source_mtime() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                and ".ipynb_checkpoints" not in p.parts]
        newest = max([newest] + [p.stat().st_mtime for p in files])
    return newest


@pytest.fixture(scope="session")
def built_site() -> Path:
    """The site as the README's build command makes it (warnings are errors).

    Reused when ``.ci/build-site`` built it after the last change to its
    sources, so one test run never builds it twice; built here otherwise.
    """
    fresh = ((HTML / "index.html").exists() and SITE_LOG.exists()
             and SITE_LOG.stat().st_mtime >= newest_source_mtime())
    if fresh:
        log = SITE_LOG.read_text()
    else:
        book = ROOT / ".venv" / "bin" / "jupyter-book"
        exe = str(book) if book.exists() else shutil.which("jupyter-book")
        result = subprocess.run([exe, "build", str(ROOT), "-W", "-n", "--keep-going"],
                                capture_output=True, text=True, cwd=ROOT)
        log = result.stdout + result.stderr
        SITE_LOG.parent.mkdir(parents=True, exist_ok=True)
        SITE_LOG.write_text(log)
        assert result.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    return HTML


def book_sources() -> list[Path]:
    """Every page of the book: its Markdown files and notebooks."""
    return [p for p in (ROOT / "book").rglob("*") if p.suffix in (".md", ".ipynb")
            and ".ipynb_checkpoints" not in p.parts]


def chapter_pages(html: Path) -> list[Path]:
    """The built page of every page the book has now (not pages an earlier build
    left behind under names the book no longer uses)."""
    return sorted(html / src.relative_to(ROOT).with_suffix(".html") for src in book_sources())


@pytest.mark.slow
def test_every_toc_page_was_built(built_site):
    toc = (ROOT / "_toc.yml").read_text()
    for src in book_sources():
        rel = src.relative_to(ROOT).with_suffix("")
        assert str(rel) in toc, f"{rel} is not in _toc.yml"
        assert (built_site / rel).with_suffix(".html").exists(), f"{rel} was not built"


@pytest.mark.slow
def test_no_page_asks_a_cdn_for_scripts(built_site):
    for page in chapter_pages(built_site) + [built_site / "index.html"]:
        html = page.read_text()
        for needle in ('src="https://', 'src="http://', 'href="https://fonts'):
            assert needle not in html, f"{page.name} loads {needle}..."


@pytest.fixture(scope="session")
def server(built_site):
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium "
                    "(as root: apt-get install chromium fonts-dejavu-core), or set "
                    "BNLESSONS_CHROMIUM to a Chromium binary", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


WAIT_FOR_MATHJAX = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  return true;
}
"""

PAGE_REPORT = """
() => {
  const raw = [];
  for (const el of document.querySelectorAll('.math, .MathJax_Preview')) {
    if (!el.querySelector('mjx-container') && /\\\\[(\\[]|\\$\\$/.test(el.textContent)) {
      raw.push(el.textContent.slice(0, 60));
    }
  }
  const body = document.querySelector('article') || document.body;
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const p = node.parentElement;
    if (p && p.closest('pre, code, script, style, mjx-container, .highlight')) continue;
    if (/\\\\(frac|mathcal|sigma|mu|hat|sum)\\b/.test(node.textContent)) {
      raw.push(node.textContent.slice(0, 60));
    }
  }
  const clipped = [];
  for (const el of document.querySelectorAll(
      'div.cell_output pre, div.output pre, mjx-container[display="true"]')) {
    if (el.scrollWidth > el.clientWidth + 1) clipped.push(el.textContent.slice(0, 60));
  }
  const header = document.querySelector('header#pst-header');
  const duplicateHeader = !!header && header.offsetHeight > 0;
  const images = Array.from(document.images).map(img => ({
    src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0,
    // widget snapshots are drawn by the ipywidgets embedder, which sets no alt
    figure: !!img.closest('div.cell_output') && !img.closest('.jupyter-widgets'),
    alt: (img.getAttribute('alt') || '').trim()}));
  return {raw, images, clipped, duplicateHeader,
          math: document.querySelectorAll('mjx-container').length};
}
"""


def pages_to_visit(html: Path) -> list[Path]:
    return [html / "index.html"] + chapter_pages(html)


@pytest.mark.browser
def test_pages_render_offline(built_site, server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    math_pages = 0
    for page_path in pages_to_visit(built_site):
        rel = page_path.relative_to(built_site).as_posix()
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        outside: list[str] = []
        errors: list[str] = []

        def route(r, outside=outside):
            host = urlparse(r.request.url).hostname
            if host in ("127.0.0.1", "localhost") or r.request.url.startswith("data:"):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m, errors=errors: errors.append(m.text)
                if m.type == "error" else None)
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.goto(f"{server}/{rel}", wait_until="networkidle")
        page.evaluate(WAIT_FOR_MATHJAX)
        report = page.evaluate(PAGE_REPORT)
        page.screenshot(path=str(SHOTS / (rel.replace("/", "__") + ".png")), full_page=False)
        context.close()
        math_pages += report["math"] > 0
        if outside:
            failures.append(f"{rel}: requests left the machine: {outside[:3]}")
        if errors:
            failures.append(f"{rel}: console errors: {errors[:3]}")
        if report["raw"]:
            failures.append(f"{rel}: raw TeX left on the page: {report['raw'][:3]}")
        if report["clipped"]:
            failures.append(f"{rel}: output or equation wider than the column (scrolls "
                            f"sideways): {report['clipped'][:3]}")
        if report["duplicateHeader"]:
            failures.append(f"{rel}: the theme's second, nearly empty header is shown")
        no_alt = [i["src"] for i in report["images"] if i["figure"]
                  and (not i["alt"] or i["alt"].endswith(".png"))]
        if no_alt:
            failures.append(f"{rel}: figures without alt text (cell metadata "
                            f"mystnb.image.alt): {no_alt[:3]}")
        broken = [i["src"] for i in report["images"] if not i["ok"]]
        if broken:
            failures.append(f"{rel}: images that did not load: {broken[:3]}")
    assert not failures, "\n".join(failures)
    assert math_pages >= 2, "MathJax rendered no formula: is the local copy missing?"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
