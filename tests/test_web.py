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
    first = html.index('class="card"')
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
