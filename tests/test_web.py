"""The web UI and JSON API through Flask's test client."""

from __future__ import annotations

import pytest

from device import settings
from device.daemon import Daemon
from device.web import create_app


@pytest.fixture(scope="module")
def daemon(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir)}, env={}))
    daemon.load()
    return daemon


@pytest.fixture(scope="module")
def client(daemon):
    return create_app(daemon).test_client()


def test_home_page_has_a_search_box_and_no_remote_assets(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<input id="q" name="q" type="search"' in html
    assert "Search 8 photos" in html
    assert "http://" not in html and "https://" not in html  # offline: nothing from a CDN


def test_search_page_renders_results_without_javascript(client):
    html = client.get("/?q=a+cup+of+coffee").get_data(as_text=True)
    first = html.index('class="card')  # "card strong" or "card weak"
    assert "kitchen/coffee.png" in html[first:first + 600]
    assert 'class="score"' in html


def test_bad_query_on_the_page_is_a_400_with_the_reason(client):
    page = client.get("/?q=%00%01")
    assert page.status_code == 400
    assert "control characters" in page.get_data(as_text=True)


def test_api_search_returns_the_cli_objects(client):
    response = client.get("/api/search?q=a%20cat&k=3")
    assert response.status_code == 200
    results = response.get_json()
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["path"] == "pets/cat.png"
    assert list(results[0])[:4] == ["rank", "id", "path", "score"]


def test_api_search_pages_with_offset(client):
    whole = client.get("/api/search?q=space&k=6").get_json()
    second = client.get("/api/search?q=space&k=3&offset=3").get_json()
    assert [r["id"] for r in second] == [r["id"] for r in whole[3:]]
    assert [r["rank"] for r in second] == [4, 5, 6]


@pytest.mark.parametrize("url, reason", [
    ("/api/search", "missing parameter q"),
    ("/api/search?q=", "empty"),
    ("/api/search?q=%20%20", "empty"),
    ("/api/search?q=" + "a" * 501, "limit is 500"),
    ("/api/search?q=%00", "control characters"),
    ("/api/search?q=%21%21%21", "no letters or digits"),
    ("/api/search?q=cat&k=0", "k must be between"),
    ("/api/search?q=cat&k=abc", "whole numbers"),
    ("/api/search?q=cat&k=5&offset=-1", "offset must be"),
])
def test_api_bad_parameters_get_400_with_a_reason(client, url, reason):
    response = client.get(url)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]


def test_thumbnails_are_served_for_items(client):
    item_id = client.get("/api/search?q=cat&k=1").get_json()[0]["id"]
    response = client.get(f"/thumbs/{item_id}")
    try:
        assert response.status_code == 200
        assert response.mimetype == "image/jpeg"
        assert response.data[:2] == b"\xff\xd8"
    finally:
        response.close()


@pytest.mark.parametrize("url", [
    "/thumbs/0000000000000000",
    "/thumbs/..%2fmanifest.json",
    "/thumbs/../manifest.json",
    "/thumbs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/manifest.json",
    "/static/../../manifest.json",
])
def test_nothing_outside_the_bundle_is_served(client, url):
    assert client.get(url).status_code == 404


def test_unknown_api_route_is_a_json_404(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_healthz_names_the_bundle(client, bundle_dir):
    import json

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["bundle_id"] == manifest["bundle_id"]
    assert body["items"] == 8


def test_every_response_reports_its_latency(client):
    response = client.get("/api/search?q=moon&k=1")
    assert float(response.headers["X-Glimpse-Took-Ms"]) >= 0


# --- URLs are built from known parameters only (issue 13.6) -----------------------------------------


@pytest.mark.parametrize("extra", ["endpoint=x", "_method=POST", "_scheme=https", "_external=1", "_anchor=x",
                                   "values=1", "page=2", "endpoint=x&_scheme=https&_external=1"])
def test_a_text_search_on_a_similar_page_redirects_with_known_parameters_only(client, extra):
    item_id = client.get("/api/search?q=cat&k=1").get_json()[0]["id"]
    response = client.get(f"/similar/{item_id}?q=cat&folder=pets&{extra}", base_url="http://glimpse.example:8080")
    assert response.status_code == 302, response.get_data(as_text=True)[:200]
    assert response.headers["Location"] == "/?q=cat&folder=pets"  # relative: no scheme, no client Host


def test_more_results_link_carries_known_parameters_only(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "page_size": 2}, env={}))
    daemon.load()
    html = create_app(daemon).test_client().get("/?q=cat&folder=&endpoint=x&_external=1").get_data(as_text=True)
    assert 'id="more" href="?q=cat&amp;page=1"' in html


# --- Content-Disposition for any file name (issue 13.7) ---------------------------------------------

ODD_NAMES = ["line\nbreak.jpg", "crlf\r\nname.jpg", 'quo"te.jpg', "back\\slash.jpg", "semi;colon, comma.jpg",
             "per%41cent.jpg", "tab\tname.jpg", "\u00fcn\u00efcode \u65e5\u672c.jpg", "emoji \U0001f600.jpg"]


@pytest.fixture(scope="module")
def odd_client(tmp_path_factory):
    from PIL import Image

    from conftest import run_cli

    library = tmp_path_factory.mktemp("odd-library")
    for i, name in enumerate(ODD_NAMES):
        Image.new("RGB", (48, 32), (30 * i, 90, 200 - 20 * i)).save(library / name, "JPEG")
    out = tmp_path_factory.mktemp("odd") / "bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--originals", "copy", "--quiet")
    daemon = Daemon(settings.load({"bundle": str(out)}, env={}))
    daemon.load()
    return create_app(daemon).test_client(), daemon.searcher.bundle.items


def test_originals_with_any_file_name_download_under_that_name(odd_client):
    from werkzeug.http import parse_options_header

    client, items = odd_client
    assert sorted(item.name for item in items) == sorted(ODD_NAMES)
    for item in items:
        with client.get(f"/originals/{item.id}") as response:
            assert response.status_code == 200, (item.name, response.get_data(as_text=True)[:200])
            header = response.headers["Content-Disposition"]
            assert header.isascii() and not any(c in header for c in "\r\n\t\0"), header
            kind, params = parse_options_header(header)
            assert kind == "attachment" and params["filename"] == item.name, header


def test_the_content_disposition_fallback_is_plain_ascii():
    from device.web import content_disposition

    header = content_disposition('a"b\\c\nd%e\u00e9.jpg')
    assert header.startswith('attachment; filename="a_b_c_d_e_.jpg"; filename*=UTF-8\'\'')
    assert content_disposition("\n").startswith('attachment; filename="_"')


# --- cross-site request forgery (issue 13.10) ---------------------------------------------------------


@pytest.fixture
def fresh(bundle_dir):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir)}, env={}))
    daemon.load()
    return daemon, create_app(daemon).test_client()


def _reloads(daemon) -> float:
    return sum(daemon.metrics.reloads.labels(result=r)._value.get() for r in ("ok", "refused"))


@pytest.mark.parametrize("headers, kwargs", [
    ({"Origin": "http://evil.example"}, {}),
    ({"Origin": "http://evil.example"}, {"json": {}}),
    ({"Origin": "null"}, {"data": "x", "content_type": "text/plain"}),
    ({"Referer": "http://evil.example/page"}, {}),
    ({"Origin": "http://localhost:9999"}, {"json": {}}),  # another port is another site
    ({"Origin": "https://localhost"}, {"json": {}}),  # another scheme too
    ({"Origin": "http://127.0.0.1:8080"}, {"json": {}}),  # the page was not where the request went
    # DNS rebinding: the attacker's name resolved to this device; Host and Origin agree, but it is not our name.
    ({"Origin": "http://evil.example", "Host": "evil.example"}, {"json": {}}),
    # Forms and text/plain without a token, even with no Origin (a browser that sends neither header).
    ({}, {"data": '{"bundle": "x"}', "content_type": "text/plain"}),
    ({}, {"data": {"bundle": "x"}, "content_type": "application/x-www-form-urlencoded"}),
    ({}, {"data": {}, "content_type": "multipart/form-data"}),
    # Basic credentials a browser remembers for a site are sent with a forged form too.
    ({"Authorization": "Basic dXNlcjpwYXNz"}, {"data": {}, "content_type": "multipart/form-data"}),
])
def test_a_page_of_another_site_cannot_reload_even_from_this_device(fresh, headers, kwargs):
    daemon, client = fresh
    response = client.post("/api/admin/reload", headers=headers, **kwargs)
    assert response.status_code == 403, response.get_json()
    assert "refused" in response.get_json()["error"]
    assert _reloads(daemon) == 0


@pytest.mark.parametrize("headers, kwargs", [
    ({}, {}),  # a script: no body
    ({}, {"json": {}}),  # JSON: no page of another site can send it without a preflight
    ({"Origin": "http://localhost"}, {"json": {}}),  # the appliance's own page
    ({"Origin": "http://127.0.0.1:8080"}, {"json": {}, "base_url": "http://127.0.0.1:8080"}),
    ({"Origin": "http://[::1]:8080"}, {"json": {}, "base_url": "http://[::1]:8080"}),
    ({"Origin": "http://192.168.1.20:8080"}, {"json": {}, "base_url": "http://192.168.1.20:8080"}),
    ({"Referer": "http://localhost/add"}, {}),
    ({"X-Glimpse-Client": "cli"}, {"data": "{}", "content_type": "text/plain"}),
])
def test_the_appliances_own_pages_and_scripts_may_reload(fresh, headers, kwargs):
    daemon, client = fresh
    response = client.post("/api/admin/reload", headers=headers, **kwargs)
    assert response.status_code in (200, 400), response.get_json()  # 400: text/plain is not a JSON object
    assert response.status_code == 200 or "JSON object" in response.get_json()["error"]


def test_a_form_post_needs_the_token_of_the_page(fresh):
    daemon, client = fresh
    page = client.get("/?q=a+cat").get_data(as_text=True)
    assert 'name="csrf_token"' in page
    cookie = client.get_cookie("glimpse_csrf")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"
    assert client.post("/show", data={"q": "a cat"}).status_code == 403
    assert client.post("/show", data={"q": "a cat", "csrf_token": "x" * 43}).status_code == 403
    assert daemon.slideshow.snapshot().source == "none"
    assert client.post("/show", data={"q": "a cat", "csrf_token": cookie.value}).status_code == 200
    assert daemon.slideshow.snapshot().query == "a cat"


def test_other_names_of_the_appliance_are_trusted_only_when_configured(bundle_dir):
    import socket

    def reload_from(config, host):
        daemon = Daemon(settings.load({"bundle": str(bundle_dir), **config}, env={}))
        daemon.load()
        client = create_app(daemon).test_client()
        return client.post("/api/admin/reload", json={}, headers={"Origin": f"http://{host}:8080"},
                           base_url=f"http://{host}:8080").status_code

    assert reload_from({}, "glimpse.home") == 403
    assert reload_from({"trusted_hosts": "nas.lan, glimpse.home"}, "glimpse.home") == 200
    name = socket.gethostname().lower()
    assert reload_from({}, name) == 200 and reload_from({}, f"{name}.local") == 200


def test_uploads_and_removals_from_a_page_of_another_site_are_refused(tmp_path, bundle_dir):
    import io
    import shutil

    data = tmp_path / "data"
    shutil.copytree(bundle_dir, data / "bundles" / "a")
    (data / "current").symlink_to("bundles/a")
    daemon = Daemon(settings.load({"data_dir": str(data)}, env={}))
    daemon.load()
    assert daemon.start_ingest()
    try:
        client = create_app(daemon).test_client()
        evil = {"Origin": "http://evil.example"}
        for headers in (evil, {}):  # without a token of the page, even with no Origin at all
            response = client.post("/api/admin/upload", headers=headers, content_type="multipart/form-data",
                                   data={"files": [(io.BytesIO(b"x" * 10), "a.jpg")]})
            assert response.status_code == 403, response.get_json()
            response = client.post("/add", headers=headers, content_type="multipart/form-data",
                                   data={"files": [(io.BytesIO(b"x" * 10), "a.jpg")]})
            assert response.status_code == 403 and response.mimetype == "text/html"
        assert client.delete("/api/admin/items/0123456789abcdef", headers=evil).status_code == 403
        assert daemon.ingest_store.counts()["queued"] == 0
    finally:
        daemon.ingestor.stop()
