"""report.html in a real headless browser (chromium): it renders with no console message, every plot is an
image the browser decoded (naturalWidth > 0), and the screenshot's plots are not blank.

Slow (a tiny profile and three browser runs). Skips with a reason where chromium is not installed
(`apt-get install chromium`). The page itself has no script: the probe is added to a copy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import tiny_overrides
from foundry_edge.profiling import ProfileConfig, Subject, run_profile, write_reports

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
                None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")]
PROBE = """<script>addEventListener('load', () => { const out = document.createElement('pre'); out.id = 'probe';
out.textContent = JSON.stringify([...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]));
document.body.appendChild(out); });</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    from tests.profiling.test_telemetry import build_tree

    out = tmp_path_factory.mktemp("browser")
    subjects = {role: Subject(preset, role, tiny_overrides(preset))
                for preset, role in (("foundry-edge16", "student"), ("pointjepa-vits", "teacher"))}
    config = ProfileConfig(students=[subjects["student"]], teacher=subjects["teacher"], points=[256, 512],
                           batches=[1], warmup_s=0.0, iterations=3, threads=1, matmul_size=128, matmul_s=0.05,
                           timeout_s=120, out_dir=out, telemetry_root=build_tree("agx-orin-jp5", out / "agx"),
                           accuracy={"foundry-edge16": 90.5, "pointjepa-vits": 92.0})
    report = run_profile(config)
    assert all(m["status"] == "ok" for m in report["measurements"]), report["measurements"]
    return write_reports(report, out)["html"]


def test_every_plot_is_decoded_by_the_browser(report_html, tmp_path):
    html = report_html.read_text()
    expected = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    done = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert done.returncode == 0 and found, done.stderr[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert [alt for alt, _, _ in images] == expected and len(expected) >= 6
    assert all(width > 100 and height > 100 for _, width, height in images), images


def test_no_console_messages_and_the_plots_are_not_blank(report_html, tmp_path):
    logged = chromium("--enable-logging=stderr", "--v=1", "--virtual-time-budget=10000", "--dump-dom",
                      report_html.as_uri())
    assert logged.returncode == 0
    console = [line for line in logged.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "report.png"
    done = chromium("--window-size=1280,6000", f"--screenshot={shot}", report_html.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("L")
    rows = [image.crop((0, top, image.width, top + 400)) for top in range(0, image.height - 400, 400)]
    drawn = [sum(band.histogram()[:200]) / (band.width * band.height) for band in rows]  # share of dark pixels
    assert sum(share > 0.01 for share in drawn) >= 6  # bands with ink: tables and plots, not an empty page
