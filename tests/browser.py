"""Headless Chromium for the HTML tests (the report, the comparison page): flags, loading a page with
an image probe, and reading the probe back. The `chromium` session fixture is in tests/conftest.py."""

from __future__ import annotations

import re
import subprocess

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",
]
IMAGE_PROBE = (
    '<script>window.addEventListener("load", () => {const imgs = [...document.images];'
    "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
    'document.body.setAttribute("data-images", ok + "/" + imgs.length);});</script></body>'
)


def open_in_chromium(chromium, page: str, tmp_path, *extra) -> str:
    """Load ``page`` (with the image probe) in headless Chromium; return the DOM after load."""
    path = tmp_path / "page.html"
    path.write_text(page.replace("</body>", IMAGE_PROBE))
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def images_marker(dom: str) -> str:
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, "the load handler did not run"
    return found.group(1)
