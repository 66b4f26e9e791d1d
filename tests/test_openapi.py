"""The OpenAPI descriptions in swagger/: valid, complete, and served as written.

- every file is a valid OpenAPI document (openapi-spec-validator);
- every route the app registers is described, and every described path is a route, for the default
  ``app_base`` and another one (routes and ``servers`` move together);
- ``/swagger/<name>.yaml`` and ``.json`` serve the file, with ``servers`` following ``app_base``
  and the ``host``/``port`` examples naming the bridge's database;
- ``/swagger/`` lists every file and its assets come from the bridge (no CDN).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from mtango.api.swagger import SWAGGER_DIR
from mtango.app import create_app
from mtango.config import Config
from tests.bridge import InProcessBridge

FILES = sorted(SWAGGER_DIR.glob("*.yaml"))
SPEC_APP_BASE = "/tango/rest"
OTHER_APP_BASE = "/api/tango"
# Routes that are not part of an API: the documentation itself (the description files and the
# Swagger UI page and its assets) and the built-in web page ("/" for browsers, its files under
# /web). Describing them would need a server outside app_base in every file, for no client: they
# are checked by the tests below and tests/test_web_page.py instead.
UNDESCRIBED_PREFIXES = ("/swagger", "/web")
UNDESCRIBED_PATHS = {"/"}
METHODS = {"get", "put", "post", "delete", "patch"}
PICTURES = {"image/png": {"type": "string", "format": "binary"},
            "image/svg+xml": {"type": "string"}}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def expected_document(path: Path, app_base: str, tango_host: str) -> dict[str, Any]:
    """What the bridge must serve for a file: servers under app_base, its database as example."""
    doc = copy.deepcopy(load(path))
    for server in doc.get("servers", []):
        if server["url"] == SPEC_APP_BASE or server["url"].startswith(SPEC_APP_BASE + "/"):
            server["url"] = app_base + server["url"][len(SPEC_APP_BASE):]
    parameters = doc.get("components", {}).get("parameters", {})
    if "host" in parameters and "port" in parameters:
        host, port = tango_host.rsplit(":", 1)
        parameters["host"]["example"] = host
        parameters["port"]["example"] = int(port)
    return doc


def described(documents: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(METHOD, /full/path/{param}) for every operation of the documents."""
    found = set()
    for doc in documents:
        base = doc.get("servers", [{"url": ""}])[0]["url"].rstrip("/")
        for path, item in doc["paths"].items():
            full = (base + path).rstrip("/") or "/"
            found |= {(method.upper(), full) for method in item if method in METHODS}
    return found


def registered(config: Config) -> set[tuple[str, str]]:
    """(METHOD, /full/path/{param}) for every route of the app, OPTIONS and HEAD aside."""
    app = create_app(config)
    found = set()
    for route in app.router.routes:
        path = "/" + route.path.strip("/")
        path = re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", path)
        if path.startswith(UNDESCRIBED_PREFIXES) or path in UNDESCRIBED_PATHS:
            continue
        found |= {(m, path) for m in route.methods if m not in ("OPTIONS", "HEAD")}
    return found


@pytest.fixture(scope="module")
def bridge_elsewhere(control_system) -> InProcessBridge:
    running = InProcessBridge(
        Config(tango_host=control_system.tango_host, app_base=OTHER_APP_BASE)
    ).start()
    yield running
    running.stop()


# -- the files -------------------------------------------------------------------------------------


def test_there_are_descriptions_of_every_api():
    assert {f.stem for f in FILES} == {"epics", "live", "main", "ops", "pvws", "rc3",
                                       "subscriptions", "sys"}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_description_is_valid_openapi(path):
    doc = load(path)
    validate(doc)
    assert doc["openapi"].startswith("3.0"), "Swagger UI 4 (swagger-ui-bundle) renders 3.0"


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_enum_values_have_their_schema_type(path):
    """YAML 1.1 reads unquoted ON/OFF/yes/no as booleans: every enum must keep its type."""
    python_type = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}
    problems = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "enum" in node and node.get("type") in python_type:
                wanted = python_type[node["type"]]
                problems.extend(f"{where}: {v!r}" for v in node["enum"]
                                if not isinstance(v, wanted) or isinstance(v, bool) != (
                                    node["type"] == "boolean"))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(load(path), path.name)
    assert problems == []


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_operation_documents_success_and_failure_bodies(path):
    """A JSON schema for every response; every error status answers the FAILURE body.

    Health checks (tag ``health``) are the exception: their 503 carries the health report, which
    load balancers and people read, rather than a FAILURE body. A 204 and a WebSocket's 101 have no
    body, and a success that is not JSON (``/metrics``: Prometheus text; an event stream:
    ``text/event-stream``) documents its type with a string schema; pictures (``value/image``,
    ``value/plot``, ``pvs/{pv}/plot``) are ``image/png`` (binary) and ``image/svg+xml`` strings.
    """
    doc = load(path)
    for route, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            is_health = "health" in operation.get("tags", [])
            responses = operation["responses"]
            # A WebSocket's success is its upgrade (101).
            assert any(code.startswith("2") or code == "101" for code in responses), (
                route, method)
            assert "500" in responses, (route, method)
            for code, response in responses.items():
                if "$ref" in response:
                    response = resolve(doc, response["$ref"])
                if code in ("204", "101"):
                    assert "content" not in response, (route, method, code)
                    continue
                content = response["content"]
                pictures = {m: content.pop(m) for m in list(content) if m in PICTURES}
                for media, picture in pictures.items():
                    assert picture["schema"] == PICTURES[media], (route, method, media)
                if pictures and not content:
                    continue
                if int(code) < 400 and "application/json" not in content:
                    assert [m.split(";")[0] for m in content] in (
                        ["text/plain"], ["text/event-stream"]), (route, method)
                    assert all(m["schema"] == {"type": "string"} for m in content.values())
                    continue
                schema = content["application/json"]["schema"]
                if int(code) >= 400 and not (is_health and code == "503"):
                    assert resolve(doc, schema["$ref"])["properties"]["quality"]["enum"] == [
                        "FAILURE"], (route, method, code)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for key in ref.removeprefix("#/").split("/"):
        node = node[key]
    return node


def test_rc3_failures_answered_with_200_are_documented():
    """In rc3 mode a Tango failure is a 200 FAILURE body: those 200s are result-or-FAILURE."""
    doc = load(SWAGGER_DIR / "rc3.yaml")
    asks_tango = 0
    for route, item in doc["paths"].items():
        if "{host}" not in route:
            continue
        asks_tango += 1
        schema = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        choices = schema.get("oneOf") or schema.get("anyOf")
        assert {"$ref": "#/components/schemas/Failure"} in choices, route
    assert asks_tango == 24


# -- routes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("app_base", [SPEC_APP_BASE, OTHER_APP_BASE])
def test_every_route_is_described_and_every_description_is_a_route(app_base):
    config = Config(tango_host="127.0.0.1:10000", app_base=app_base)
    routes = registered(config)
    documents = [expected_document(f, app_base, "127.0.0.1:10000") for f in FILES]
    operations = described(documents)
    missing = "\n".join(f"{m} {p}" for m, p in sorted(routes - operations))
    assert not missing, f"routes without a description in swagger/:\n{missing}"
    extra = "\n".join(f"{m} {p}" for m, p in sorted(operations - routes))
    assert not extra, f"described operations that are no route:\n{extra}"
    assert any(path.startswith(app_base + "/rc3/") for _, path in routes)


# -- serving ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_served_yaml_and_json_are_the_file_with_this_bridge_servers(
    path, bridge, bridge_elsewhere, control_system
):
    for running, app_base in ((bridge, SPEC_APP_BASE), (bridge_elsewhere, OTHER_APP_BASE)):
        expected = expected_document(path, app_base, control_system.tango_host)
        as_yaml = running.get(f"/swagger/{path.stem}.yaml")
        assert as_yaml.status == 200
        assert as_yaml.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(as_yaml.body) == expected
        as_json = running.get(f"/swagger/{path.stem}.json")
        assert as_json.status == 200
        assert as_json.headers["content-type"] == "application/json"
        assert json.loads(as_json.body) == expected


def test_servers_of_another_app_base_lead_to_the_api(bridge_elsewhere, control_system):
    doc = bridge_elsewhere.get("/swagger/rc3.json").json()
    base = doc["servers"][0]["url"]
    assert base == f"{OTHER_APP_BASE}/rc3"
    hosts = bridge_elsewhere.get(f"{base}/hosts")
    assert hosts.status == 200
    expected_url = f"{bridge_elsewhere.base}{base}/hosts/{control_system.db_host}/" \
                   f"{control_system.db_port}"
    assert hosts.json() == {control_system.tango_host.lower(): expected_url}
    assert bridge_elsewhere.get(f"{SPEC_APP_BASE}/rc3/hosts").status == 404
    main = bridge_elsewhere.get("/swagger/main.json").json()
    root = bridge_elsewhere.get(main["servers"][0]["url"])
    assert root.json()["rc3"] == f"{bridge_elsewhere.base}{OTHER_APP_BASE}/rc3"


def test_unknown_description_is_a_404_failure(bridge):
    reply = bridge.get("/swagger/nope.yaml")
    assert reply.status == 404
    assert reply.json()["quality"] == "FAILURE"
    assert reply.json()["errors"][0]["reason"] == "NotFound"


def test_swagger_ui_page_lists_every_description_and_uses_only_local_assets(bridge):
    for url in ("/swagger", "/swagger/"):
        page = bridge.get(url)
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    for path in FILES:
        assert f'"url": "/swagger/{path.stem}.yaml"' in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert '"validatorUrl": null' in html  # the default badge fetches from the internet
    assets = re.findall(r'(?:src|href)="(/swagger/assets/[^"]+)"', html)
    assert {a.rsplit("/", 1)[1] for a in assets} >= {
        "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
    for asset in assets:
        reply = bridge.get(asset)
        assert reply.status == 200, asset
        assert len(reply.body) > 500, asset
    assert bridge.get("/swagger/assets/swagger-ui-bundle.js").headers["content-type"].startswith(
        "text/javascript")


def test_only_the_swagger_ui_assets_are_served(bridge):
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-initializer.js"):
        reply = bridge.get(f"/swagger/assets/{name}")
        assert reply.status == 404, name
        assert reply.json()["quality"] == "FAILURE"
