"""The HTML report as a reader sees it: headless Chromium at 1280 px (Debian's `chromium` package).

A probe script, added to a copy of the report before anything else runs, records script
errors, and on load measures the page: horizontal overflow of the main column and of the
page, images that did not decode, and whether sorting a table by a click works. The page's
DOM, with the probe's findings, comes back through ``--dump-dom``. Skipped with the reason
where no browser is installed.
"""

import json
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, run_module

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.type)); }, true);
window.addEventListener('load', function () {
  var out = {errors: window.__errors, width: window.innerWidth,
             page_overflow: document.documentElement.scrollWidth - window.innerWidth,
             body_overflow: document.body.scrollWidth - document.body.clientWidth, broken: [], tables: 0,
             wide_tables: [], sorted: null};
  document.querySelectorAll('img').forEach(function (im) {
    if (!im.complete || im.naturalWidth === 0) out.broken.push(im.alt || im.src.slice(0, 40));
  });
  document.querySelectorAll('table').forEach(function (t) {
    out.tables += 1;
    var r = t.getBoundingClientRect();
    if (r.width > 0 && r.right > document.body.getBoundingClientRect().right + 1) out.wide_tables.push(t.rows[0].textContent.slice(0, 60));
  });
  var th = document.querySelector('table.sortable th:nth-child(2)');
  if (th) {
    var body = th.closest('table').tBodies[0];
    th.click(); var first = body.rows[0].children[1].textContent;
    th.click(); var again = body.rows[0].children[1].textContent;
    out.sorted = {ascending_first: first, descending_first: again, rows: body.rows.length};
  }
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def render(html_path, tmp_path, width=1280):
    """The probe's findings for *html_path* in headless Chromium *width* pixels wide."""
    exe = _browser()
    page = tmp_path / "probed.html"
    text = html_path.read_text()
    page.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                        f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium: {r.stderr[-2000:]}"
    import html
    return json.loads(html.unescape(m.group(1)))


needs_browser = pytest.mark.skipif(_browser() is None, reason="no Chromium installed (apt-get install chromium)")


@needs_browser
@pytest.mark.parametrize("source,extra,tables", [
    ("cpu-default.json", (), 4), ("baseline-ci.json", (), 4),
    ("cpu-snr20-40.json", (), 2),                 # metacal rows only: their table and the per-bin one
    ("cpu-paper.json", ("--scaling", "scaling-cpu/scaling.csv"), 5)])
def test_report_fits_1280px_with_working_images_and_scripts(tmp_path, source, extra, tables):
    out = tmp_path / "report"
    extra = [ROOT / "reports" / e if e.endswith(".csv") else e for e in extra]
    r = run_module("bench.report", ROOT / "reports" / source, *extra, "--out", out)
    assert r.returncode == 0, r.stderr
    probe = render(out / "report.html", tmp_path)
    assert probe["errors"] == [], probe["errors"]
    assert probe["broken"] == [], f"images that did not decode: {probe['broken']}"
    assert probe["page_overflow"] <= 0, f"the page scrolls sideways by {probe['page_overflow']} px"
    assert probe["body_overflow"] <= 0 and probe["wide_tables"] == [], probe
    assert probe["tables"] >= tables
    s = probe["sorted"]             # a click sorts, a second click reverses
    assert s and s["rows"] >= 2 and s["ascending_first"] != s["descending_first"], s


@needs_browser
def test_probe_catches_overflow_broken_images_and_script_errors(tmp_path):
    """The checks themselves: a page that is wrong in each way is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body style='margin:0'>"
                   "<table><tr><td style='min-width:3000px'>wide</td></tr></table>"
                   "<img alt='missing' src='data:image/png;base64,AAAA'>"
                   "<script>undefinedFunction();</script></body></html>")
    probe = render(bad, tmp_path)
    assert probe["page_overflow"] > 1000
    assert probe["broken"] == ["missing"]
    assert any("undefinedFunction" in e for e in probe["errors"])
