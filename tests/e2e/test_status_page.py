"""The live status page on the admin listener (issue 12), in headless Chromium: it renders every
section from the status JSON it polls, shows a fill while it happens (its progress moving from
one poll to the next), and a screenshot is taken."""

from __future__ import annotations

import struct
import threading

import pytest

from cdp import Browser, chromium_path
from helpers import MiB, stream_sha256, wait_until

BIG = ("acme/big-model", "main", "big.bin")
FILL_ROW = "document.querySelector('#fills tbody tr[data-blob]')"


@pytest.fixture
def browser(tmp_path):
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/test (it installs Debian's chromium)")
    with Browser(tmp_path / "chromium") as b:
        yield b


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_status_page_shows_a_fill_while_it_happens(emu_factory, mirror_factory, browser, tmp_path):
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(2 * MiB)))
    m = mirror_factory(emu, cache={"block_size": "1MiB"}, fill={"connections_per_file": 1})
    entry = emu.file(*BIG)
    assert m.get("/api/models/acme/tiny-model").status_code == 200      # a top repo
    done: list = []
    url = m.url + "/{}/resolve/{}/{}".format(*BIG)
    download = threading.Thread(target=lambda: done.append(stream_sha256(url)))
    download.start()
    try:
        browser.navigate(m.admin_url + "/?interval=300")
        browser.wait_for("document.body && Number(document.body.dataset.polls) > 0", 15, "the page's first poll")
        first = browser.wait_for(f"{FILL_ROW} && Number({FILL_ROW}.dataset.present) > 0 && "
                                 f"Number({FILL_ROW}.dataset.present)", 20, "a fill row with bytes")
        later = browser.wait_for(f"{FILL_ROW} && Number({FILL_ROW}.dataset.present) > {first} && "
                                 f"Number({FILL_ROW}.dataset.present)", 20, "the fill's progress to move")
        assert first < later < entry["size"]
        row = browser.evaluate(f"{FILL_ROW}.innerText")
        assert "models/acme/big-model" in row and "big.bin" in row and "%" in row, row
        assert browser.evaluate(f"{FILL_ROW}.dataset.blob") == entry["sha256"]
        png = browser.screenshot(tmp_path / "status-page.png")
    finally:
        download.join(120)
    assert done == [(200, entry["sha256"], entry["size"])]
    assert (tmp_path / "status-page.png").stat().st_size > 20_000, "the screenshot is nearly empty"
    width, height = png_size(png)
    assert width >= 800 and height >= 600, (width, height)
    # Every section rendered from the status JSON.
    upstreams = browser.evaluate("document.querySelector('#upstreams tbody').innerText")
    assert emu.hub in upstreams and "up" in upstreams
    root = browser.evaluate("document.querySelector('#roots tbody tr[data-root]').dataset.root")
    assert root == str(m.cache_dir)
    assert "no warm-up jobs" in browser.evaluate("document.querySelector('#jobs').innerText")
    top = browser.evaluate("document.querySelector('#top-repos tbody').innerText")
    assert "models/acme/tiny-model" in top
    assert "no errors" in browser.evaluate("document.querySelector('#errors').innerText")
    # Once the fill is done, the next polls drop it.
    browser.wait_for(f"!{FILL_ROW} && document.querySelector('#fills').innerText"
                     f".includes('nothing is being fetched')", 30, "the finished fill to leave the page")
    assert browser.exceptions() == [], browser.exceptions()


def test_the_status_page_says_when_hubcache_is_unreachable(mirror, browser):
    browser.navigate(mirror.admin_url + "/?interval=250")
    browser.wait_for("document.body && Number(document.body.dataset.polls) > 0", 15, "the page's first poll")
    mirror.stop()
    state = browser.wait_for("document.getElementById('poll-state').className === 'stale' && "
                             "document.getElementById('poll-state').innerText", 15, "the stale marker")
    assert "cannot reach hubcache" in state
