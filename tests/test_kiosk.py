"""The HDMI kiosk page: server-rendered slides (no JavaScript) and Debian's headless Chromium."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from conftest import REPO
from device import settings
from device.daemon import Daemon
from device.web import create_app

ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def daemon(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "slideshow_results": 4}, env={}))
    daemon.load()
    yield daemon
    daemon.searcher.close()


@pytest.fixture
def client(daemon):
    daemon.slideshow.clear()
    return create_app(daemon).test_client()


# --- without a browser ---------------------------------------------------------------------


def test_kiosk_renders_the_first_slide_and_a_refresh_to_the_next(client, daemon):
    page = client.get("/kiosk?q=a+cup+of+coffee")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    showing = daemon.slideshow.snapshot()
    assert showing.source == "web" and len(showing.results) == 4  # slideshow_results
    first, second = (r.item for r in showing.results[:2])
    assert first.path == "kitchen/coffee.png"
    assert f'data-slide="{first.id}"' in html and f'src="/images/{first.id}"' in html
    assert "“a cup of coffee”" in html and "1 / 4" in html
    # No script needed: the browser is told to load the next slide after the interval.
    assert '<noscript><meta http-equiv="refresh" content="8.0;url=/kiosk?i=1"></noscript>' in html
    nxt = client.get("/kiosk?i=1").get_data(as_text=True)
    assert f'data-slide="{second.id}"' in nxt and "2 / 4" in nxt
    # Offline: nothing loaded from outside (the address shown for phones is text, not a resource).
    assert '="http://' not in html and '="https://' not in html and "url(http" not in html


def test_kiosk_without_a_search_shows_the_library_and_counts_what_it_steps_through(client, daemon):
    html = client.get("/kiosk").get_data(as_text=True)
    first = daemon.searcher.bundle.items[0]
    assert f'data-slide="{first.id}"' in html
    # It steps through 4 (slideshow_results) of the 8: the title says so, not "8 photos" above "1 / 4".
    assert "The first 4 of 8 photos on this Glimpse" in html and "1 / 4" in html
    body = client.get("/api/kiosk").get_json()
    assert body["kind"] == "library" and body["query"] == "" and len(body["slides"]) == 4
    assert body["title"] == "The first 4 of 8 photos on this Glimpse"


def test_a_library_that_fits_is_counted_whole(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "slideshow_results": 12}, env={}))
    daemon.load()
    body = create_app(daemon).test_client().get("/api/kiosk").get_json()
    assert body["title"] == "8 photos on this Glimpse" and len(body["slides"]) == 8


def test_other_peoples_searches_do_not_take_over_the_kiosk(client, daemon):
    before = client.get("/api/kiosk").get_json()
    for url in ("/?q=space", "/?q=a+cat&min_score=0.5", "/api/search?q=a+cat&k=3&show=1", "/api/search?q=moon"):
        assert client.get(url).status_code == 200
    after = client.get("/api/kiosk").get_json()
    assert (after["generation"], after["kind"], after["title"]) == (before["generation"], "library",
                                                                     before["title"])


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Referer": "http://evil.example/"},
                                     {"Sec-Fetch-Site": "same-site", "Referer": "http://localhost/"}])
def test_a_page_of_another_site_cannot_choose_what_the_screen_shows(client, daemon, headers):
    before = daemon.slideshow.snapshot().generation
    page = client.get("/kiosk?q=a+cat", headers=headers)
    assert page.status_code == 403 and "another site" in page.get_data(as_text=True)
    assert daemon.slideshow.snapshot().generation == before
    # Opened directly (the kiosk unit, or someone typing the address), it does.
    assert client.get("/kiosk?q=a+cat", headers={"Sec-Fetch-Site": "none"}).status_code == 200
    assert daemon.slideshow.snapshot().query == "a cat"


def test_kiosk_api_follows_what_is_shown_and_presses(client, daemon):
    assert client.post("/api/admin/show", json={"q": "space"}).status_code == 200  # "Show on the screen"
    body = client.get("/api/kiosk").get_json()
    assert (body["kind"], body["query"], body["position"]) == ("results", "space", 0)
    generation = body["generation"]
    daemon.slideshow.advance()  # what the button does
    body = client.get("/api/kiosk").get_json()
    assert body["position"] == 1 and body["generation"] == generation + 1
    assert body["title"] == "“space”"


@pytest.mark.parametrize("url, reason", [
    ("/kiosk?interval=abc", "interval must be a number"),
    ("/kiosk?interval=0.01", "between 0.2 and 3600"),
    ("/kiosk?q=%00", "control characters"),
])
def test_kiosk_bad_parameters_show_the_reason(client, url, reason):
    page = client.get(url)
    assert page.status_code == 400
    assert reason in page.get_data(as_text=True)


# --- in headless Chromium -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(daemon):
    from device.server import HttpServer

    server = HttpServer(create_app(daemon), "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.bind_addr[1]}"
    server.stop()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,720",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _slide(browser) -> str:
    return browser.find_element("tag name", "body").get_attribute("data-slide")


def _wait_for(predicate, timeout: float = 15.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kiosk_advances_through_the_results_in_chromium(server, browser, daemon):
    browser.get(server + "/kiosk?q=a+cup+of+coffee&interval=0.5")
    # The page records every slide it shows: polling from here could miss one on a busy machine.
    browser.execute_script(
        "window.seenSlides = [document.body.dataset.slide];"
        "new MutationObserver(function () { window.seenSlides.push(document.body.dataset.slide); })"
        ".observe(document.body, {attributes: true, attributeFilter: ['data-slide']});")
    expected = [r.item.id for r in daemon.slideshow.snapshot().results]
    assert browser.execute_script("return window.seenSlides[0];") == expected[0]  # the first slide is the best
    _wait_for(lambda: browser.execute_script(
        "var p = document.getElementById('photo'); return p.complete && p.naturalWidth > 0;"), what="the photo")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "kiosk.png"))

    def round_once():
        seen = []
        for slide in browser.execute_script("return window.seenSlides;"):
            if not seen or slide != seen[-1]:  # the attribute may be set again to the same slide
                seen.append(slide)
        return seen if len(seen) >= len(expected) + 1 else None
    seen = _wait_for(round_once, what="the slideshow to go round once")[:len(expected) + 1]
    assert seen == expected + expected[:1]  # in rank order, then round again
    assert browser.find_element("id", "position").text.endswith(f"/ {len(expected)}")


def test_kiosk_follows_the_button_and_steps_with_arrow_keys(server, browser, daemon):
    from selenium.webdriver.common.keys import Keys

    daemon.slideshow.show("space", daemon.searcher.search("space", k=4), "web")
    browser.get(server + "/kiosk?interval=600")  # no auto-advance during this test
    ids = [r.item.id for r in daemon.slideshow.snapshot().results]
    assert _slide(browser) == ids[0]
    daemon.slideshow.advance()  # a press of the front-panel button
    _wait_for(lambda: _slide(browser) == ids[1], what="the kiosk to follow the button")
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_RIGHT)
    assert _wait_for(lambda: _slide(browser) == ids[2], what="the right arrow")
    body.send_keys(Keys.ARROW_LEFT)
    body.send_keys(Keys.ARROW_LEFT)
    assert _wait_for(lambda: _slide(browser) == ids[0], what="the left arrow")
    assert browser.find_element("id", "query").text == "“space”"
    daemon.slideshow.clear()  # after a bundle reload: the library again
    _wait_for(lambda: browser.find_element("id", "query").text == "The first 4 of 8 photos on this Glimpse",
              what="the kiosk to show the library")
    assert _slide(browser) == daemon.searcher.bundle.items[0].id
