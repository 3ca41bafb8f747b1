"""The JSON API against its contract, ``docs/openapi.json``, through Flask's test client.

The document and the app are checked against each other both ways (every route
documented, every documented path served), and real responses are checked
against the documented schemas with a small checker for the part of JSON Schema
the document uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_cli
from device import settings
from device.daemon import Daemon
from device.web import create_app

SPEC_PATH = REPO / "docs" / "openapi.json"
CAT, COFFEE, ROCKET, MOON = "pets/cat.png", "kitchen/coffee.png", "space/rocket.jpg", "space/moon.png"
TOKEN = "correct horse battery staple"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def _client(config: dict):
    daemon = Daemon(settings.load(config, env={}))
    daemon.load()
    return create_app(daemon).test_client()


@pytest.fixture(scope="module")
def client(bundle_dir):
    return _client({"bundle": str(bundle_dir)})


@pytest.fixture
def fresh_client(bundle_dir):
    """A client of its own daemon, for tests that count or reload."""
    return _client({"bundle": str(bundle_dir)})


@pytest.fixture(scope="module")
def ids(bundle_dir) -> dict:
    """Library path -> item id."""
    lines = (bundle_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()
    return {doc["path"]: doc["id"] for doc in map(json.loads, lines)}


def _photo(path: Path, colour, size=(96, 64), taken: str | None = None) -> None:
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):  # a little structure, so the photos embed differently
        image.paste((255 - colour[0], colour[1], 255 - colour[2]), (x, 0, x + 3, size[1]))
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # Exif IFD, DateTimeOriginal
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90, exif=exif)


@pytest.fixture(scope="module")
def dated_client(tmp_path_factory):
    """A bundle of three photos taken on different days, one without a date, and one
    larger than the preview size."""
    library = tmp_path_factory.mktemp("dated-library")
    _photo(library / "2020" / "winter.jpg", (20, 40, 200), taken="2020:01:15 10:00:00")
    _photo(library / "2021" / "summer.jpg", (220, 180, 20), taken="2021:06:01 12:30:00")
    _photo(library / "2022" / "newyear.jpg", (200, 20, 60), taken="2022:12:31 23:59:00")
    _photo(library / "scans" / "undated.jpg", (30, 160, 60), size=(1600, 1200))
    out = tmp_path_factory.mktemp("dated") / "bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--quiet")
    return _client({"bundle": str(out)})


@pytest.fixture(scope="module")
def space_bundle(tmp_path_factory, library) -> Path:
    """A second, different bundle: only the space/ folder of the library."""
    out = tmp_path_factory.mktemp("space") / "bundle"
    run_cli("provisioning", "build", "--images", str(library / "space"), "--out", str(out), "--quiet")
    return out


@pytest.fixture
def data_dir(tmp_path, bundle_dir, space_bundle) -> Path:
    """DATA_DIR with bundles/a (the library), bundles/b (space only), bundles/bad
    (the library with items.jsonl altered) and ``current`` -> bundles/a."""
    data = tmp_path / "data"
    shutil.copytree(bundle_dir, data / "bundles" / "a")
    shutil.copytree(space_bundle, data / "bundles" / "b")
    bad = data / "bundles" / "bad"
    shutil.copytree(bundle_dir, bad)
    items = bytearray((bad / "items.jsonl").read_bytes())
    at = items.index(b'"path": "') + len(b'"path": "')
    items[at] ^= 0x20  # same size, other content: only the sha256 can tell
    (bad / "items.jsonl").write_bytes(bytes(items))
    os.symlink("bundles/a", data / "current")
    return data


def _bundle_id(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["bundle_id"]


def _search(client, query: str, **params) -> list[dict]:
    response = client.get("/api/search", query_string={"q": query, **params})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _paths(results) -> list[str]:
    return [r["path"] for r in results]


# --- a checker for the JSON Schema subset the document uses ---------------------------------

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_KEYWORDS = {"$ref", "type", "enum", "minimum", "maximum", "minLength", "maxLength", "required", "properties",
             "additionalProperties", "items", "format", "description", "default", "examples"}


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        assert node["$ref"].startswith("#/"), node["$ref"]
        target = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def schema_errors(spec: dict, schema: dict, value, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (an empty list when it conforms)."""
    schema = _resolve(spec, schema)
    unknown = set(schema) - _KEYWORDS
    assert not unknown, f"the checker does not know {unknown} (at {where})"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: {value!r} is not {' or '.join(types)}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} is above {schema['maximum']}")
    if isinstance(value, str) and schema.get("format") == "date" and not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        errors.append(f"{where}: {value!r} is not a date")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: lacks {name!r}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(spec, properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: has undocumented {name!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(spec, schema["items"], item, f"{where}[{i}]")
    return errors


def test_the_checker_catches_what_it_should(spec):
    result = {"$ref": "#/components/schemas/Result"}
    good = {"rank": 1, "id": "a", "path": "p", "score": 0.5, "strength": "weak", "thumb": "t", "width": 1,
            "height": 1, "taken": None}
    assert schema_errors(spec, result, good) == []
    assert schema_errors(spec, result, {**good, "rank": True})  # a bool is no integer
    assert schema_errors(spec, result, {**good, "score": 1.5})
    assert schema_errors(spec, result, {**good, "extra": 1})
    assert schema_errors(spec, result, {**good, "strength": "fair"})
    assert schema_errors(spec, result, {**good, "strength": None}) == []
    assert schema_errors(spec, result, {k: v for k, v in good.items() if k != "taken"})
    assert schema_errors(spec, {"type": "array", "items": result}, [good, {**good, "taken": 3}])


# --- the document ------------------------------------------------------------------------------


def _documented_operations(spec: dict) -> set[tuple[str, str]]:
    verbs = {"get", "post", "put", "patch", "delete"}
    return {(re.sub(r"\{[^}]*\}", "{}", path), verb.upper())
            for path, item in spec["paths"].items() for verb in item if verb in verbs}


def _served_operations(app, only=lambda rule: True) -> set[tuple[str, str]]:
    return {(re.sub(r"<[^>]*>", "{}", rule.rule), method)
            for rule in app.url_map.iter_rules() if only(rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_the_document_is_openapi_3(spec):
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"])
    assert spec["info"]["title"] and spec["info"]["version"]
    # every reference resolves
    refs = re.findall(r'"\$ref": "([^"]+)"', SPEC_PATH.read_text(encoding="utf-8"))
    assert refs
    for ref in set(refs):
        assert _resolve(spec, {"$ref": ref}), ref


def test_every_api_route_is_documented_and_every_documented_path_is_served(spec, client):
    app = client.application
    documented = _documented_operations(spec)
    served_api = _served_operations(app, lambda rule: rule.startswith("/api/") or rule == "/healthz")
    assert served_api, "no API routes found"
    assert served_api - documented == set(), "routes missing from docs/openapi.json"
    assert documented - _served_operations(app) == set(), "documented but not served"


def test_the_query_syntax_is_documented(spec):
    q = next(p for p in spec["paths"]["/api/search"]["get"]["parameters"] if p.get("name") == "q")
    assert q["required"] is True
    for example in ("beach -people", "2:dog + cat", "@ID", '"-5 degrees"'):
        assert example in q["description"]


def _operation(spec, path, verb="get"):
    return spec["paths"][path][verb]


def _response_schema(spec, path, status, verb="get", media="application/json"):
    responses = _operation(spec, path, verb)["responses"]
    assert str(status) in responses, f"{verb.upper()} {path} does not document status {status}"
    return responses[str(status)]["content"][media]["schema"]


# --- real responses against the document ---------------------------------------------------------


def test_every_documented_get_answers_as_documented(spec, client, ids):
    cat = ids[CAT]
    urls = {
        "/api/search": "/api/search?q=a+cat&k=8",
        "/api/similar/{id}": f"/api/similar/{cat}?k=3",
        "/api/items/{id}": f"/api/items/{cat}",
        "/api/status": "/api/status",
        "/api/kiosk": "/api/kiosk",
        "/healthz": "/healthz",
    }
    gets = {path for path, item in spec["paths"].items() if "get" in item} - {"/metrics"}
    assert gets == set(urls), "a documented GET is not exercised here"
    for path, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.mimetype == "application/json", url
        assert schema_errors(spec, _response_schema(spec, path, 200), response.get_json()) == [], url
    results = client.get(urls["/api/search"]).get_json()
    assert len(results) == 8 and results[0]["path"] == CAT


def test_an_item_describes_the_photo(spec, client, ids):
    item = client.get(f"/api/items/{ids[ROCKET]}").get_json()
    assert set(item) == set(_resolve(spec, {"$ref": "#/components/schemas/Item"})["required"])
    assert (item["id"], item["path"], item["folder"], item["name"]) == (ids[ROCKET], ROCKET, "space", "rocket.jpg")
    assert item["sha256"].startswith(item["id"])
    for url in (item["thumb_url"], item["image_url"]):
        with client.get(url) as response:
            assert response.status_code == 200
            assert response.data[:2] == b"\xff\xd8"


def test_metrics_are_prometheus_text(spec, fresh_client):
    assert "text/plain" in _operation(spec, "/metrics")["responses"]["200"]["content"]
    assert _search(fresh_client, "a cat")
    assert fresh_client.get("/api/search?q=cat&k=0").status_code == 400
    response = fresh_client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert re.search(r'^glimpse_queries_total\{kind="text"\} 1\.0$', text, re.M)
    assert re.search(r'^glimpse_request_duration_seconds_bucket\{endpoint="/api/search",le="\+Inf"\} 2\.0$',
                     text, re.M)
    assert re.search(r"^glimpse_items 8\.0$", text, re.M)
    assert re.search(r'^glimpse_model_info\{bundle_id="[^"]+",model="glimpse-default@[^"]+"\} 1\.0$', text, re.M)
    assert re.search(r"^glimpse_bundle_age_seconds [0-9.e+]+$", text, re.M)
    assert re.search(r'^glimpse_errors_total\{kind="bad_request"\} 1\.0$', text, re.M)


def test_status_reports_the_bundle_and_counts_queries(spec, fresh_client, bundle_dir):
    before = fresh_client.get("/api/status").get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/status", 200), before) == []
    assert before["bundle_id"] == _bundle_id(bundle_dir)
    assert before["items"] == 8
    assert before["model"].startswith("glimpse-default@")
    assert before["index"]["kind"] == "exact"
    assert before["uptime_seconds"] >= 0
    _search(fresh_client, "a rocket")
    fresh_client.get(f"/api/similar/{_search(fresh_client, 'a rocket', k=1)[0]['id']}")
    after = fresh_client.get("/api/status").get_json()
    assert after["queries"] == before["queries"] + 3


# --- bad requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, reason", [
    ({"q": "cat", "k": "0"}, "k must be between 1 and 200"),
    ({"q": "cat", "k": "201"}, "k must be between 1 and 200"),
    ({"q": "cat", "k": "x"}, "whole numbers"),
    ({"q": "cat", "offset": "-1"}, "offset must be"),
    ({"q": "cat", "min_score": "2"}, "min_score must be a number between -1 and 1"),
    ({"q": "cat", "min_score": "high"}, "min_score must be a number"),
    ({"q": "cat", "from": "2021-13-01"}, "date from must be YYYY-MM-DD"),
    ({"q": "cat", "to": "yesterday"}, "date to must be YYYY-MM-DD"),
    ({"q": "cat", "from": "2021-06-02", "to": "2021-06-01"}, "ends before it starts"),
    ({}, "missing parameter q"),
    ({"q": ""}, "empty"),
    ({"q": "cat\x07dog"}, "control characters"),
    ({"q": "-"}, "no letters or digits"),
    ({"q": "- +"}, "no letters or digits"),
    ({"q": "-cat"}, "at least one term that is not excluded"),
    ({"q": "dog -"}, "ends with an operator"),
    ({"q": "0:dog"}, "weight must be above 0"),
    ({"q": "11:dog"}, "at most 10"),
    ({"q": "2: + cat"}, "a weight must be followed by a term"),
    ({"q": "cat -cat"}, "cancel each other out"),
    ({"q": " + ".join(f"w{i}" for i in range(9))}, "the limit is 8"),
])
def test_a_bad_search_is_a_400_with_the_reason(spec, client, params, reason):
    response = client.get("/api/search", query_string=params)
    assert response.status_code == 400
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/search", 400), body) == []
    assert reason in body["error"]


@pytest.mark.parametrize("params, reason", [
    ({"k": "0"}, "k must be between 1 and 200"),
    ({"offset": "-1"}, "offset must be"),
    ({"min_score": "-1.5"}, "min_score"),
    ({"from": "2021-02-30"}, "YYYY-MM-DD"),
])
def test_a_bad_similar_request_is_a_400_with_the_reason(client, ids, params, reason):
    response = client.get(f"/api/similar/{ids[CAT]}", query_string=params)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]


@pytest.mark.parametrize("path", ["/api/similar/{}", "/api/items/{}"])
@pytest.mark.parametrize("unknown", ["0000000000000000", "nothing", "..%2fmanifest.json"])
def test_an_unknown_id_is_a_json_404(spec, client, path, unknown):
    response = client.get(path.format(unknown))
    assert response.status_code == 404
    template = path.replace("{}", "{id}")
    assert schema_errors(spec, _response_schema(spec, template, 404), response.get_json()) == []
    if "%2f" not in unknown:  # a slash makes it another (unmatched) path, still a JSON 404
        assert "no item" in response.get_json()["error"]


# --- search behaviour ---------------------------------------------------------------------------------


def test_similar_ranks_by_cosine_of_stored_embeddings_without_the_photo_itself(client, bundle_dir, ids):
    embeddings = np.load(bundle_dir / "embeddings.npy")
    paths = [json.loads(line)["path"] for line in (bundle_dir / "items.jsonl").read_text().splitlines()]
    for photo in (CAT, ROCKET):
        row = paths.index(photo)
        cosine = embeddings @ embeddings[row]
        expected = [paths[r] for r in np.argsort(-cosine, kind="stable") if r != row]
        results = client.get(f"/api/similar/{ids[photo]}?k=200").get_json()
        assert photo not in _paths(results)
        assert _paths(results) == expected
        assert [r["rank"] for r in results] == list(range(1, 8))
        for r in results:
            assert r["score"] == pytest.approx(float(cosine[paths.index(r["path"])]), abs=1e-5)


def test_similar_pages_with_offset(client, ids):
    whole = client.get(f"/api/similar/{ids[MOON]}?k=6").get_json()
    second = client.get(f"/api/similar/{ids[MOON]}?k=3&offset=3").get_json()
    assert _paths(second) == _paths(whole[3:])
    assert [r["rank"] for r in second] == [4, 5, 6]


def test_folder_filter_keeps_only_that_folder(client, ids):
    results = _search(client, "a cat", folder="space")
    assert sorted(_paths(results)) == ["space/astronaut.png", "space/moon.png", "space/rocket.jpg"]
    assert _search(client, "a cat", folder="/space/") == results  # slashes around it do not matter
    assert _search(client, "a cat", folder="spa") == []  # a folder, not a prefix of a name
    similar = client.get(f"/api/similar/{ids[ROCKET]}?folder=space").get_json()
    assert sorted(_paths(similar)) == ["space/astronaut.png", "space/moon.png"]


def test_min_score_hides_weaker_results(client):
    everything = _search(client, "space")
    strong = _search(client, "space", min_score="0.3")
    assert 0 < len(strong) < len(everything)
    assert all(r["score"] >= 0.3 for r in strong)
    assert strong == [r for r in everything if r["score"] >= 0.3]
    assert _search(client, "space", min_score="0.99") == []


def test_date_filters_keep_photos_taken_in_the_range_and_drop_undated_ones(dated_client):
    everything = _search(dated_client, "a photo")
    assert sorted(_paths(everything)) == ["2020/winter.jpg", "2021/summer.jpg", "2022/newyear.jpg",
                                          "scans/undated.jpg"]
    taken = {r["path"]: r["taken"] for r in everything}
    assert taken["2021/summer.jpg"] == "2021-06-01T12:30:00"
    assert taken["scans/undated.jpg"] is None

    def between(**dates):
        return sorted(_paths(_search(dated_client, "a photo", **dates)))

    assert between(**{"from": "2021-01-01"}) == ["2021/summer.jpg", "2022/newyear.jpg"]
    assert between(to="2021-06-01") == ["2020/winter.jpg", "2021/summer.jpg"]  # inclusive, whatever the hour
    assert between(**{"from": "2021-06-01", "to": "2021-06-01"}) == ["2021/summer.jpg"]
    assert between(**{"from": "2022-12-31"}) == ["2022/newyear.jpg"]
    assert between(**{"from": "2023-01-01"}) == []
    assert between(**{"from": "1900-01-01", "to": "2100-12-31"}) == ["2020/winter.jpg", "2021/summer.jpg",
                                                                    "2022/newyear.jpg"]


def test_excluded_terms_change_the_ranking(client):
    moon = _search(client, "the moon")
    assert moon[0]["path"] == ROCKET  # the tiny model mistakes the rocket for the moon...
    without_rocket = _search(client, "the moon -rocket")
    assert without_rocket[0]["path"] == MOON  # ...and "-rocket" fixes it
    assert without_rocket[-1]["path"] == ROCKET
    assert _search(client, "the moon - rocket") == without_rocket  # the spaced operator means the same
    cat, no_cat = _search(client, "a cat"), _search(client, "a cat -cat")
    assert _paths(cat) != _paths(no_cat)
    assert no_cat[0]["score"] < cat[0]["score"] - 0.3


def test_weights_shift_the_ranking(client):
    light = {r["path"]: r["score"] for r in _search(client, "a cup of coffee + 0.2:a rocket")}
    heavy = {r["path"]: r["score"] for r in _search(client, "a cup of coffee + 5:a rocket")}
    assert next(iter(light)) == COFFEE
    assert next(iter(heavy)) == ROCKET


def test_a_photo_reference_searches_by_that_photo(client, ids):
    alone = _search(client, f"@{ids[CAT]}")
    assert alone[0]["path"] == CAT and alone[0]["score"] == pytest.approx(1.0, abs=1e-5)
    similar = client.get(f"/api/similar/{ids[CAT]}?k=7").get_json()
    assert _paths(alone[1:]) == _paths(similar)
    mixed = _search(client, f"@{ids[COFFEE]} + 3:a rocket")
    assert mixed[0]["path"] == ROCKET and COFFEE in _paths(mixed[:3])


# --- strength: strong and weak matches (issue 15.3) ---------------------------------------------


def _relevance(bundle_dir) -> dict:
    return json.loads((bundle_dir / "model" / "model.json").read_text(encoding="utf-8"))["relevance"]


def test_every_result_says_whether_it_is_a_strong_match(client, bundle_dir):
    strong_at = _relevance(bundle_dir)["text_strong"]
    results = _search(client, "a cat", k=8)
    assert [r["strength"] for r in results] == ["strong"] + ["weak"] * 7
    assert all((r["score"] >= strong_at) == (r["strength"] == "strong") for r in results)
    # A query the model cannot answer ("people" scores about 0.3 everywhere) has no strong match.
    assert {r["strength"] for r in _search(client, "people", k=8)} == {"weak"}


def test_strength_does_not_change_with_paging_or_the_score_filter(client):
    whole = {r["id"]: r["strength"] for r in _search(client, "a cat", k=8)}
    pages = _search(client, "a cat", k=1) + _search(client, "a cat", k=7, offset=1)
    assert {r["id"]: r["strength"] for r in pages} == whole
    filtered = _search(client, "a cat", k=8, min_score="0.3")
    assert all(whole[r["id"]] == r["strength"] for r in filtered)


def test_find_similar_and_photo_queries_are_judged_by_the_photo_threshold(client, bundle_dir, ids):
    image_at = _relevance(bundle_dir)["image_strong"]
    similar = client.get(f"/api/similar/{ids[MOON]}?k=7").get_json()
    assert all((r["score"] >= image_at) == (r["strength"] == "strong") for r in similar)
    # The photo itself (cosine 1) is strong; other photos are judged as find-similar judges
    # them, not by the (lower) text threshold that many photo pairs pass.
    alone = _search(client, f"@{ids[MOON]}", k=8)
    assert alone[0]["strength"] == "strong"
    assert [r["strength"] for r in alone[1:]] == [r["strength"] for r in similar]
    assert any(r["score"] >= _relevance(bundle_dir)["text_strong"] for r in similar)


def test_a_model_without_calibration_gives_no_strength(tmp_path, library):
    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "glimpse-default", model)
    spec = json.loads((model / "model.json").read_text(encoding="utf-8"))
    del spec["relevance"]
    spec["id"] = "uncalibrated"  # not the default model's towers' name: nothing to fall back on
    (model / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    out = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--model", str(model), "--quiet")
    results = _search(_client({"bundle": str(out)}), "a cat", k=8)
    assert results[0]["path"] == CAT and {r["strength"] for r in results} == {None}


def test_a_bundle_made_before_the_calibration_gets_the_default_models(tmp_path, library):
    # The same towers as the committed default model, with the model.json of 1.1.0 before
    # it recorded its calibration (bundles built earlier carry that copy).
    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "glimpse-default", model)
    spec = json.loads((model / "model.json").read_text(encoding="utf-8"))
    del spec["relevance"]
    (model / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    out = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--model", str(model), "--quiet")
    assert "relevance" not in json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    results = _search(_client({"bundle": str(out)}), "a cat", k=2)
    assert [r["strength"] for r in results] == ["strong", "weak"]


# --- admin reload ----------------------------------------------------------------------------------------


def test_reload_from_this_device_without_a_token(spec, fresh_client, bundle_dir):
    response = fresh_client.post("/api/admin/reload")
    assert response.status_code == 200
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/admin/reload", 200, "post"), body) == []
    assert body == {"bundle_id": _bundle_id(bundle_dir), "previous": _bundle_id(bundle_dir)}


def test_reload_from_the_network_without_a_token_is_forbidden(spec, fresh_client):
    response = fresh_client.post("/api/admin/reload", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 403
    assert schema_errors(spec, _response_schema(spec, "/api/admin/reload", 403, "post"),
                         response.get_json()) == []
    assert "admin_token_sha256" in response.get_json()["error"]


@pytest.mark.parametrize("header, remote, status", [
    (None, "127.0.0.1", 401),
    ("Bearer wrong", "127.0.0.1", 401),
    ("Bearer ", "127.0.0.1", 401),
    (f"Basic {TOKEN}", "127.0.0.1", 401),
    (f"Bearer {TOKEN}", "127.0.0.1", 200),
    (f"Bearer {TOKEN}", "192.0.2.7", 200),  # with a token, the network may reload too
])
def test_reload_with_a_token_configured(spec, bundle_dir, header, remote, status):
    client = _client({"bundle": str(bundle_dir), "admin_token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()})
    headers = {"Authorization": header} if header else {}
    response = client.post("/api/admin/reload", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert response.status_code == status
    assert schema_errors(spec, _response_schema(spec, "/api/admin/reload", status, "post"),
                         response.get_json()) == []
    if status == 401:
        assert "Authorization: Bearer" in response.get_json()["error"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'"b"', b'{"bundle": 3}', b"not json"])
def test_reload_with_a_malformed_body_is_a_400(fresh_client, body):
    response = fresh_client.post("/api/admin/reload", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.get_json()


def test_reload_by_name_switches_the_current_link(data_dir):
    client = _client({"data_dir": str(data_dir)})
    a, b = _bundle_id(data_dir / "bundles" / "a"), _bundle_id(data_dir / "bundles" / "b")
    assert a != b
    assert client.get("/healthz").get_json()["bundle_id"] == a
    response = client.post("/api/admin/reload", json={"bundle": "b"})
    assert response.status_code == 200
    assert response.get_json() == {"bundle_id": b, "previous": a}
    assert (data_dir / "current").resolve() == (data_dir / "bundles" / "b").resolve()
    health = client.get("/healthz").get_json()
    assert (health["bundle_id"], health["items"]) == (b, 3)
    assert sorted(_paths(_search(client, "a rocket"))) == ["astronaut.png", "moon.png", "rocket.jpg"]
    # A plain reload now re-reads what `current` points at: still b.
    assert _plain_reload(client) == {"bundle_id": b, "previous": b}


def _plain_reload(client) -> dict:
    response = client.post("/api/admin/reload")
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("name, reason", [
    ("missing", "no such bundle directory"),
    ("bad", "items.jsonl was altered"),
])
def test_a_refused_reload_keeps_the_old_bundle_serving(spec, data_dir, name, reason):
    client = _client({"data_dir": str(data_dir)})
    a = _bundle_id(data_dir / "bundles" / "a")
    response = client.post("/api/admin/reload", json={"bundle": name})
    assert response.status_code == 409
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/admin/reload", 409, "post"), body) == []
    assert reason in body["error"] and "previous bundle keeps serving" in body["error"]
    assert os.readlink(data_dir / "current") == "bundles/a"
    assert client.get("/healthz").get_json()["bundle_id"] == a
    assert _search(client, "a cat")[0]["path"] == CAT
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'glimpse_reloads_total{result="refused"} 1.0' in metrics


def test_reload_by_name_when_current_is_a_directory_is_refused_not_an_error(data_dir):
    (data_dir / "current").unlink()
    shutil.copytree(data_dir / "bundles" / "a", data_dir / "current")  # set up by hand, without a link
    client = _client({"data_dir": str(data_dir)})
    response = client.post("/api/admin/reload", json={"bundle": "b"})
    assert response.status_code in (200, 409), response.get_json()
    if response.status_code == 409:
        assert "previous bundle keeps serving" in response.get_json()["error"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["bundles", "current"]


def test_the_bearer_scheme_is_case_insensitive(bundle_dir):
    client = _client({"bundle": str(bundle_dir), "admin_token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()})
    response = client.post("/api/admin/reload", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200, response.get_json()


class _NotifySocket:
    """systemd's side of sd_notify: a datagram socket under tmp_path, read without blocking."""

    def __init__(self, path: Path):
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.path = path

    def messages(self) -> list[str]:
        found = []
        while True:
            try:
                found.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return found


@pytest.fixture
def notify(tmp_path):
    listener = _NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


@pytest.mark.parametrize("name", ["a\u0000b", "x" * 5000, "é" * 200, "a\nb", "..", "../bundles/b", ".hidden", "",
                                  "a\\b"])
def test_a_reload_to_a_name_that_is_no_bundle_name_is_a_400_and_systemd_hears_ready(spec, data_dir, notify, name):
    from device.systemd import Notifier

    daemon = Daemon(settings.load({"data_dir": str(data_dir)}, env={}),
                    notifier=Notifier(env={"NOTIFY_SOCKET": str(notify.path)}))
    daemon.load()
    client = create_app(daemon).test_client()
    a = _bundle_id(data_dir / "bundles" / "a")
    response = client.post("/api/admin/reload", json={"bundle": name})
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/admin/reload", 400, "post"), body) == []
    assert "is not a bundle name" in body["error"] and "previous bundle keeps serving" in body["error"]
    assert len(body["error"]) < 600  # a 5,000-character name is not echoed whole
    sent = notify.messages()
    assert sent[0].startswith("RELOADING=1") and sent[-1].startswith("READY=1"), sent
    assert os.readlink(data_dir / "current") == "bundles/a"
    assert client.get("/healthz").get_json()["bundle_id"] == a
    assert 'glimpse_reloads_total{result="refused"} 1.0' in client.get("/metrics").get_data(as_text=True)


def test_systemd_hears_ready_even_when_a_reload_fails_unexpectedly(data_dir, notify, monkeypatch):
    from device.systemd import Notifier

    daemon = Daemon(settings.load({"data_dir": str(data_dir)}, env={}),
                    notifier=Notifier(env={"NOTIFY_SOCKET": str(notify.path)}))
    daemon.load()

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")  # the SD card fails under the reload
    monkeypatch.setattr(daemon, "_open", broken)
    with pytest.raises(OSError):
        daemon.reload("b")
    sent = notify.messages()
    assert sent[0].startswith("RELOADING=1") and sent[-1].startswith("READY=1"), sent
    assert daemon.metrics.reloads.labels(result="refused")._value.get() == 1
    assert os.readlink(data_dir / "current") == "bundles/a"


# --- who is "this device" (issue 13.11) -------------------------------------------------------------


@pytest.mark.parametrize("remote, status", [
    ("127.0.0.1", 200), ("127.0.0.2", 200), ("127.255.255.254", 200), ("::1", 200), ("::ffff:127.0.0.2", 200),
    ("192.0.2.7", 403), ("10.0.0.1", 403), ("::ffff:192.0.2.7", 403), ("fe80::1", 403), ("", 403),
])
def test_without_a_token_every_loopback_address_is_this_device(fresh_client, remote, status):
    response = fresh_client.post("/api/admin/reload", environ_base={"REMOTE_ADDR": remote})
    assert response.status_code == status, response.get_json()


def test_with_a_token_set_this_device_needs_it_too(bundle_dir):
    client = _client({"bundle": str(bundle_dir), "admin_token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()})
    for remote in ("127.0.0.1", "127.0.0.2", "::1"):
        response = client.post("/api/admin/reload", environ_base={"REMOTE_ADDR": remote})
        assert response.status_code == 401 and "admin token" in response.get_json()["error"]


def test_the_readme_says_what_the_code_does():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "from the device itself, or anywhere with the admin token" not in readme
    assert "127.0.0.0/8" in readme and "from the device too" in readme


# --- Show on the screen (issue 12.6) -----------------------------------------------------------------


def test_show_puts_a_search_similar_photos_or_one_photo_on_the_screen(spec, bundle_dir, ids):
    daemon = Daemon(settings.load({"bundle": str(bundle_dir), "slideshow_results": 3}, env={}))
    daemon.load()
    client = create_app(daemon).test_client()
    schema = _response_schema(spec, "/api/admin/show", 200, "post")
    body = client.post("/api/admin/show", json={"q": "a cat"}).get_json()
    assert schema_errors(spec, schema, body) == [] and body["query"] == "a cat" and body["count"] == 3
    assert daemon.slideshow.snapshot().current.item.path == CAT
    kiosk = client.get("/api/kiosk").get_json()
    assert (kiosk["query"], kiosk["generation"], len(kiosk["slides"])) == ("a cat", body["generation"], 3)
    body = client.post("/api/admin/show", json={"similar": ids[ROCKET], "folder": "space"}).get_json()
    assert body["query"] == "like rocket.jpg"
    assert {r.item.folder for r in daemon.slideshow.snapshot().results} == {"space"}
    assert ids[ROCKET] not in {r.item.id for r in daemon.slideshow.snapshot().results}
    body = client.post("/api/admin/show", json={"id": ids[MOON]}).get_json()
    assert body["count"] == 1 and daemon.slideshow.snapshot().current.item.id == ids[MOON]
    assert daemon.metrics.queries.labels(kind="similar")._value.get() == 1


@pytest.mark.parametrize("body, status, reason", [
    ({}, 400, "exactly one of"),
    ({"q": "cat", "id": "x"}, 400, "exactly one of"),
    ({"q": "cat", "colour": "red"}, 400, "unknown field"),
    ({"q": 3}, 400, "string"),
    ({"q": "%%%"}, 400, "no letters or digits"),
    ({"id": "0000000000000000"}, 404, "0000000000000000"),
    ([1], 400, "JSON object"),
])
def test_a_bad_show_request_is_a_4xx_with_the_reason(spec, fresh_client, body, status, reason):
    response = fresh_client.post("/api/admin/show", json=body)
    assert response.status_code == status, response.get_json()
    assert schema_errors(spec, _response_schema(spec, "/api/admin/show", status, "post"), response.get_json()) == []
    assert reason in response.get_json()["error"]


def test_show_is_an_admin_call(spec, bundle_dir):
    response = _client({"bundle": str(bundle_dir)}).post("/api/admin/show", json={"q": "a cat"},
                                                         environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 403
    client = _client({"bundle": str(bundle_dir), "admin_token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()})
    assert client.post("/api/admin/show", json={"q": "a cat"}).status_code == 401
    ok = client.post("/api/admin/show", json={"q": "a cat"}, headers={"Authorization": f"Bearer {TOKEN}"},
                     environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert ok.status_code == 200

@pytest.mark.parametrize("query, reason", [
    ("@nonexistent", "no photo with id 'nonexistent'"),
    ("@0000000000000000 + night", "no photo with id '0000000000000000'"),
])
def test_an_at_word_that_names_no_photo_is_a_400(client, query, reason):
    response = client.get("/api/search", query_string={"q": query})
    assert response.status_code == 400
    assert reason in response.get_json()["error"]


def test_photo_ids_in_queries_are_case_insensitive(client, ids):
    cat = ids["pets/cat.png"]
    response = client.get("/api/search", query_string={"q": f"@{cat.upper()}", "k": "1"})
    assert response.status_code == 200 and response.get_json()[0]["id"] == cat
