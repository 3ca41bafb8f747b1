"""The web UI in a real browser: Debian's headless Chromium, driven by Selenium,
against ``glimpse serve`` running as a real process.

``make test`` installs ``chromium`` and ``chromium-driver``; without them these
tests fail (they are how we know the page works for a person). Screenshots go
to ``tests/artifacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REPO, free_port as _free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"
WAIT = 30  # seconds: the bound on every wait




@contextlib.contextmanager
def _serving(log_dir: Path, *args: str):
    """``glimpse serve ARGS`` on a free loopback port; yields its base URL."""
    port = _free_port()
    log_path = log_dir / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLIMPSE_")}
    env["GLIMPSE_CONFIG"] = str(log_path.with_name("absent.conf"))  # no /etc/glimpse/glimpse.conf either
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "device", "serve", *args, "--port", str(port)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in iter(proc.stdout.readline, "")]
                              + [lines.put(None)], daemon=True)
    reader.start()
    try:
        try:
            line = lines.get(timeout=WAIT)  # printed once the bundle is loaded and the socket listens
        except queue.Empty:
            line = None
        assert line and line.startswith("Glimpse is serving"), (
            f"glimpse serve did not become ready: {line!r}\n{log_path.read_text()}")
        url = re.search(r"http://\S+", line).group(0)
        assert url == f"http://127.0.0.1:{port}/"
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=WAIT)
        proc.stdout.close()
    assert proc.returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    """``glimpse serve`` of the test bundle; yields its base URL."""
    with _serving(tmp_path_factory.mktemp("serve"), "--bundle", str(bundle_dir)) as url:
        yield url


ADMIN_TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def admin_server(bundle_dir, tmp_path_factory):
    """``glimpse serve`` of a data directory (so adding photos is on) with an admin token set."""
    import hashlib
    import shutil

    data = tmp_path_factory.mktemp("admin-data")
    shutil.copytree(bundle_dir, data / "bundles" / "a")
    (data / "current").symlink_to("bundles/a")
    with _serving(tmp_path_factory.mktemp("admin-serve"), "--data-dir", str(data),
                  "--admin-token-sha256", hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium of its own (fresh profile), through Debian's chromedriver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run `make test`, which installs Debian's chromium "
                    f"and chromium-driver", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run `make test`, which installs the test extra", pytrace=False)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for (or downloads) one.
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, message: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message)


def _card_names(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results .card .name')).map(e => e.textContent)")


def _first_card_is(name: str):
    return lambda driver: (_card_names(driver) or [None])[0] == name


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    assert path.stat().st_size > 1000
    return path


def test_search_as_you_type_then_open_a_photo_and_find_similar(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    assert browser.title == "Glimpse"
    assert _card_names(browser)[0] == "brick-wall.png"  # the start page lists the photos
    browser.execute_script("window.glimpseSamePage = true")  # gone if the page were reloaded
    browser.find_element(By.ID, "q").send_keys("a cup of coffee")
    _wait(browser, _first_card_is("coffee.png"), "the coffee photo did not come first as the query was typed")
    assert browser.execute_script("return window.glimpseSamePage") is True  # instant: no form submission
    assert "a cup of coffee" in browser.find_element(By.ID, "status").text
    _screenshot(browser, "browser-search.png")

    browser.find_element(By.CSS_SELECTOR, "#results .card a").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path.startswith("/items/"), "the photo page did not open")
    assert browser.find_element(By.CSS_SELECTOR, ".facts h2").text == "coffee.png"
    photo = browser.find_element(By.CSS_SELECTOR, "img.photo")
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                              photo), "the photo did not load")

    browser.find_element(By.ID, "find-similar").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path.startswith("/similar/"), "Find similar did not open")
    names = _card_names(browser)
    assert len(names) == 7 and "coffee.png" not in names
    _wait(browser, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth)"),
        "the thumbnails did not load")
    _screenshot(browser, "browser-similar.png")


def test_instant_results_put_strong_matches_first_and_say_when_none_is_strong(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    browser.execute_script("window.glimpseSamePage = true")
    box = browser.find_element(By.ID, "q")
    box.send_keys("people")  # glimpse-default scores every photo about 0.3 for it: no strong match
    _wait(browser, lambda d: d.find_elements(By.ID, "no-good"), "no 'No good match' for a query nothing answers")
    assert browser.find_element(By.ID, "no-good").text == "No good match for \u201cpeople\u201d."
    assert browser.find_element(By.ID, "weaker-heading").text == "Weaker matches"
    assert not browser.find_elements(By.ID, "best")
    assert len(_card_names(browser)) == 8  # still offered, under the heading
    _screenshot(browser, "browser-no-good-match.png")

    box.clear()
    box.send_keys("a cat")
    _wait(browser, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#best .card .name')).map(e => e.textContent)") == ["cat.png"],
        "the cat did not come first as the one strong match")
    assert not browser.find_elements(By.ID, "no-good")
    assert "a cat" in browser.find_element(By.ID, "status").text
    best = browser.find_element(By.ID, "best").rect
    heading = browser.find_element(By.ID, "weaker-heading")
    assert heading.is_displayed() and heading.rect["y"] >= best["y"] + best["height"]  # below the strong ones
    assert len(browser.find_elements(By.CSS_SELECTOR, "#weaker .card")) == 7
    assert browser.execute_script("return window.glimpseSamePage") is True
    _screenshot(browser, "browser-strong-and-weaker.png")


def test_on_a_phone_the_results_are_two_columns(server, browser):
    browser.set_window_size(390, 844)
    browser.get(server + "?q=a+cup+of+coffee")
    assert browser.execute_script("return window.innerWidth") <= 480
    _wait(browser, _first_card_is("coffee.png"), "no results on the phone")
    rects = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results .card')).map(c => c.getBoundingClientRect())"
        ".map(r => [Math.round(r.left), Math.round(r.top), Math.round(r.width)])")
    assert len(rects) == 8
    assert len({left for left, _, _ in rects}) == 2  # two columns...
    assert len({top for _, top, _ in rects}) == 4  # ...of four rows
    assert all(width > 120 for _, _, width in rects)  # big enough to see and tap
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    _wait(browser, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#results img')).slice(0, 2)"
        ".every(i => i.complete && i.naturalWidth)"), "the first thumbnails did not load")
    _screenshot(browser, "browser-phone.png")


def test_the_keyboard_reaches_the_search_box_and_enter_searches(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # From the top of a page without autofocus: skip link first, then on to the search box.
    browser.get(server + "help")
    visited = []
    for _ in range(5):
        target = browser.switch_to.active_element
        target.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        visited.append(active.get_attribute("id") or active.get_attribute("class") or active.text)
        if active.get_attribute("id") == "q":
            break
    assert visited[0] == "skip", f"the first Tab should reach the skip link, not {visited}"
    assert visited[-1] == "q", f"Tab never reached the search box: {visited}"
    active.send_keys("a cat", Keys.ENTER)  # no results grid here: the form itself is submitted
    _wait(browser, _first_card_is("cat.png"), "Enter on the help page did not show results for 'a cat'")
    assert urlsplit(browser.current_url).query == "q=a+cat"

    # The start page puts the cursor in the search box; Enter searches in place.
    browser.get(server)
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "q", "the start page should put the cursor in the search box"
    browser.execute_script("window.glimpseSamePage = true")
    active.send_keys("a rocket", Keys.ENTER)
    _wait(browser, _first_card_is("rocket.jpg"), "Enter did not show results for 'a rocket'")
    assert "a rocket" in browser.find_element(By.ID, "status").text
    assert browser.execute_script("return window.glimpseSamePage") is True


def test_the_skip_link_shows_when_focused_and_moves_focus_to_the_results(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "help")  # no autofocus here: the first Tab lands on the skip link
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.get_attribute("class") == "skip"
    assert skip.is_displayed() and skip.location["x"] >= 0  # on screen while focused
    skip.send_keys(Keys.ENTER)
    _wait(browser, lambda d: urlsplit(d.current_url).fragment == "main", "the skip link did not go to #main")


def test_searching_from_a_similar_page_opens_the_results(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server)
    browser.find_element(By.CSS_SELECTOR, "#results .card a").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path.startswith("/items/"), "the photo page did not open")
    browser.find_element(By.ID, "find-similar").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path.startswith("/similar/"), "Find similar did not open")
    browser.find_element(By.ID, "q").send_keys("a rocket", Keys.ENTER)
    _wait(browser, lambda d: urlsplit(d.current_url).path == "/", "Enter on a similar page did not search")
    _wait(browser, _first_card_is("rocket.jpg"), "no results for 'a rocket' after searching from a similar page")
    # the cards link to photo pages from here too
    browser.find_element(By.CSS_SELECTOR, "#results .card a").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path.startswith("/items/"), "the result did not open")
    assert browser.find_element(By.CSS_SELECTOR, ".facts h2").text == "rocket.jpg"


# --- error pages, the admin token and Show on the screen (issues 12.4, 12.6) ---------------------------


def test_an_error_page_on_a_phone_is_readable_and_leads_back(server, browser):
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 844)
    for path in ("items/nothing", "no/such/page", "add"):
        browser.get(server + path)
        message = browser.find_element(By.ID, "error-message")
        assert message.is_displayed() and message.text
        size = float(browser.execute_script("return parseFloat(getComputedStyle(arguments[0]).fontSize)", message))
        assert size >= 16, f"{path}: {size}px is too small to read on a phone"
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"{path}: the error page scrolls sideways on a phone: {widths}"
    _screenshot(browser, "browser-error-phone.png")
    browser.find_element(By.ID, "back").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path == "/" and _card_names(d), "Back did not lead home")


def _new_photo(path: Path) -> Path:
    from PIL import Image

    image = Image.new("RGB", (120, 80), (200, 120, 40))
    for x in range(0, 120, 10):
        image.paste((20, 60, 200), (x, 0, x + 4, 80))
    image.save(path, "JPEG")
    return path


def test_add_photos_asks_for_the_token_and_keeps_the_chosen_files(admin_server, browser, tmp_path):
    import json
    import urllib.request

    from selenium.webdriver.common.by import By

    photo = _new_photo(tmp_path / "stripes.jpg")
    browser.set_window_size(390, 844)
    browser.get(admin_server + "add")
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    browser.find_element(By.ID, "files").send_keys(str(photo))
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    token_form = browser.find_element(By.ID, "token-form")
    _wait(browser, lambda d: token_form.is_displayed(), "no token form after a 401")
    assert "needs the admin token" in browser.find_element(By.ID, "token-reason").text
    chosen = "return document.getElementById('files').files.length"
    assert browser.execute_script(chosen) == 1  # the files are still chosen
    _screenshot(browser, "browser-add-token.png")

    browser.find_element(By.ID, "token-input").send_keys("not the token")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, lambda d: "wrong" in d.find_element(By.ID, "token-reason").text, "a wrong token was not said")
    assert browser.execute_script(chosen) == 1

    browser.find_element(By.ID, "token-input").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, lambda d: "stripes.jpg: added" in d.find_element(By.ID, "upload-results").text,
          "the upload did not go through with the right token")
    assert not token_form.is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('glimpse.adminToken')") == ADMIN_TOKEN

    # The token is kept for this tab: "Show on the screen" needs no second asking.
    browser.get(admin_server + "?q=a+cup+of+coffee")
    _wait(browser, _first_card_is("coffee.png"), "no results")
    browser.find_element(By.CSS_SELECTOR, "#show-form button").click()
    _wait(browser, lambda d: "On the screen now" in d.find_element(By.CSS_SELECTOR, "#show-form .show-status").text,
          "Show on the screen did not answer")
    with urllib.request.urlopen(admin_server + "api/kiosk", timeout=WAIT) as response:
        assert json.load(response)["query"] == "a cup of coffee"


def test_instant_search_does_not_take_over_the_screen_but_show_does(server, browser):
    import json
    import urllib.request

    from selenium.webdriver.common.by import By

    def kiosk():
        with urllib.request.urlopen(server + "api/kiosk", timeout=WAIT) as response:
            return json.load(response)

    before = kiosk()
    browser.get(server)
    browser.find_element(By.ID, "q").send_keys("a rocket")
    _wait(browser, _first_card_is("rocket.jpg"), "no instant results")
    assert kiosk()["generation"] == before["generation"]  # typing a search changed nothing on the screen
    show = browser.find_element(By.ID, "show-form")
    assert show.is_displayed()  # offered for what is on this page now (this is the device: no token set)
    show.find_element(By.TAG_NAME, "button").click()
    _wait(browser, lambda d: "On the screen now" in show.text, "Show on the screen did not answer")
    assert kiosk()["query"] == "a rocket"
