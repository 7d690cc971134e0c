"""The web app in a real browser: headless Chromium (Playwright) uploads and draws examples, asks for samples,
and checks the images it gets back. `make setup-browser` installs Playwright and Debian's Chromium.

Set METAGEN_SCREENSHOT=path.png to keep the page's screenshot, and METAGEN_BROWSER_RUNS=runs to serve other
run folders than the test's tiny one (the README's picture is made with the demo's runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright is not installed: `make setup-browser` installs it")
uvicorn = pytest.importorskip("uvicorn", reason="the web app's extra: pip install 'metagen[serve]'")

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from metagen.data.glyphs import FACES, font_dir  # noqa: E402
from metagen.serve.app import create_app  # noqa: E402


def _chromium() -> str | None:
    """A Chromium the test can drive: $METAGEN_CHROMIUM, Debian's, or the one `playwright install` fetched."""
    for candidate in (os.environ.get("METAGEN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        path = _chromium()
        try:
            b = p.chromium.launch(executable_path=path, args=["--no-sandbox"]) if path else p.chromium.launch()
        except Exception as e:  # no browser here: say how to get one
            pytest.skip(f"no Chromium to drive ({type(e).__name__}): `make setup-browser` installs one")
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(serve_runs):
    """The app served by uvicorn on a free localhost port, in a thread, for the module's tests."""
    roots = [Path(os.environ["METAGEN_BROWSER_RUNS"])] if os.environ.get("METAGEN_BROWSER_RUNS") else [serve_runs]
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(roots), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def glyph_pngs(folder: Path, char: str = "\u10d1", n: int = 5) -> list[str]:
    """`char` (Georgian 'ბ', a held-out script of the glyphs data) in `n` bundled typefaces, as PNG files."""
    paths = []
    faces = [f for f in FACES if f.startswith("DejaVu")]
    for i in range(n):
        font = ImageFont.truetype(str(font_dir() / faces[i % len(faces)]), 96)
        img = Image.new("L", (128, 128), 255)
        ImageDraw.Draw(img).text((64, 64), char, font=font, fill=0, anchor="mm")
        paths.append(str(folder / f"example_{i}.png"))
        img.save(paths[-1])
    return paths


def test_upload_five_draw_one_and_get_samples(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_function("document.querySelectorAll('#run option').length > 0")
    assert page.input_value("#run").endswith("demo/spatial")  # the demo's run is the default

    page.set_input_files("#files", glyph_pngs(tmp_path))
    page.wait_for_function("document.querySelectorAll('#thumbs img').length === 5")
    box = page.locator("#pad").bounding_box()  # draw one more example on the pad
    page.mouse.move(box["x"] + 40, box["y"] + 30)
    page.mouse.down()
    for x, y in ((100, 40), (70, 110), (40, 120)):
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()
    page.click("#adddrawing")
    page.wait_for_function("document.querySelectorAll('#thumbs img').length === 6")
    page.locator("#thumbs .thumb button").last.click()  # and take it out again
    page.wait_for_function("document.querySelectorAll('#thumbs img').length === 5")

    page.fill("#n", "24")
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('#grid img.sample').length === 24 && "
                           "[...document.querySelectorAll('#grid img.sample')].every(i => i.complete)",
                           timeout=120_000)
    assert page.text_content("#error") == ""
    stats = page.evaluate("""() => [...document.querySelectorAll('#grid img.sample')].map(img => {
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let lo = 255, hi = 0;
        for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return {w: img.naturalWidth, h: img.naturalHeight, lo, hi};
    })""")
    run = page.input_value("#run")
    size = next(r["image_size"] for r in page.request.get(server + "/api/runs").json()["runs"] if r["id"] == run)
    assert len(stats) == 24 and all(s["w"] == s["h"] == size for s in stats), stats[:3]
    blank = [s for s in stats if s["lo"] > 240 or s["hi"] == s["lo"]]  # all paper, or one flat grey
    assert not blank, f"{len(blank)} of 24 samples are blank: {blank[:3]}"
    href = page.get_attribute("#zip", "href")
    assert page.request.get(server + href).headers["content-type"] == "application/zip"
    assert not errors, errors

    shot = page.screenshot(full_page=True)
    (tmp_path / "serve.png").write_bytes(shot)
    if os.environ.get("METAGEN_SCREENSHOT"):
        Path(os.environ["METAGEN_SCREENSHOT"]).write_bytes(shot)
    page.close()


def test_bad_upload_shows_the_servers_message(browser, server, tmp_path):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.querySelectorAll('#run option').length > 0")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#files", [str(bad)])
    page.click("#go")
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert "cannot read image 'notes.png'" in page.text_content("#error")
    page.close()
