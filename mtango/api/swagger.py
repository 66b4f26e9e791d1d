"""OpenAPI descriptions and Swagger UI, under ``/swagger``.

The files in ``mtango/swagger/`` (one OpenAPI 3 document per API: ``main.yaml``, ``rc3.yaml``,
...; the repository's ``swagger/`` links there) are the single source. They are written for the
default ``app_base`` (``/tango/rest``); each is served as ``/swagger/<name>.yaml`` and
``/swagger/<name>.json`` with two changes:

- ``servers`` URLs under ``/tango/rest`` follow the configured ``app_base``. They stay relative to
  the server that answered, so "Try it out" calls the bridge that served the page.
- the ``example`` of the ``host`` and ``port`` path parameters names this bridge's first Tango
  database, so "Try it out" reaches a real database without typing.

``/swagger/`` is a Swagger UI page listing every document. Its assets come from the installed
``swagger-ui-bundle`` package and are served by the bridge itself: no CDN, no internet access.
"""

from __future__ import annotations

import copy
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import swagger_ui_bundle
import yaml
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, make_blueprint
from mtango.config import Config
from mtango.errors import not_found

log = logging.getLogger("mtango")
# Package data, so that an installed wheel serves them; the repository's top-level swagger/ is a
# link to this directory (where the layout and the README say the descriptions are).
SWAGGER_DIR = Path(__file__).resolve().parents[1] / "swagger"
PREFIX = "/swagger"
# The app_base the files in swagger/ are written for (the default in mtango/defaults.py).
SPEC_APP_BASE = "/tango/rest"
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "favicon-16x16.png": "image/png",
    "favicon-32x32.png": "image/png",
}
YAML_TYPE = "application/yaml; charset=utf-8"
JSON_TYPE = "application/json"


def spec_files(directory: Path = SWAGGER_DIR) -> dict[str, Path]:
    """``{"rc3": Path(".../swagger/rc3.yaml"), ...}``, sorted by name."""
    return {path.stem: path for path in sorted(directory.glob("*.yaml"))}


def served_document(document: dict[str, Any], config: Config) -> dict[str, Any]:
    """A document as this bridge serves it: servers follow app_base, examples name its database."""
    doc = copy.deepcopy(document)
    for server in doc.get("servers", []):
        url = server.get("url", "")
        if url == SPEC_APP_BASE or url.startswith(SPEC_APP_BASE + "/"):
            server["url"] = config.app_base + url[len(SPEC_APP_BASE):]
    hosts = sorted(config.allowed_tango_hosts)
    first = config.served_tango_host or (hosts[0] if hosts else None)
    parameters = doc.get("components", {}).get("parameters", {})
    if first and {"host", "port"} <= parameters.keys():
        host, port = first.rsplit(":", 1)
        parameters["host"]["example"] = host
        parameters["port"]["example"] = int(port)
    return doc


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (descriptions) as literal blocks, as they are written in the files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


@cache
def documents(config: Config) -> dict[str, tuple[str, str]]:
    """``{"rc3.yaml": (body, content type), "rc3.json": ...}`` for every file, built once."""
    served: dict[str, tuple[str, str]] = {}
    for name, path in spec_files().items():
        doc = served_document(yaml.safe_load(path.read_text(encoding="utf-8")), config)
        served[f"{name}.yaml"] = (dump_yaml(doc), YAML_TYPE)
        served[f"{name}.json"] = (json.dumps(doc, ensure_ascii=False), JSON_TYPE)
    return served


@cache
def _asset(name: str) -> bytes:
    return (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()


@cache
def index_page(config: Config) -> str:
    names = sorted({name.rsplit(".", 1)[0] for name in documents(config)})
    urls = [{"url": f"{PREFIX}/{name}.yaml", "name": name} for name in names]
    primary = "rc3" if "rc3" in names else (names[0] if names else "")
    options = {
        "urls": urls,
        "urls.primaryName": primary,
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "layout": "StandaloneLayout",
        "validatorUrl": None,  # the default badge would fetch from the internet
    }
    # "</" cannot close the script element from inside the JSON.
    options_json = json.dumps(options).replace("</", "<\\/")
    assets = f"{PREFIX}/assets"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>mtango-bridge APIs</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{assets}/favicon-16x16.png" sizes="16x16">
  <style>html {{ box-sizing: border-box; overflow-y: scroll; }} body {{ margin: 0; }}</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js"></script>
  <script>
    const options = {options_json};
    options.presets = [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset];
    options.plugins = [SwaggerUIBundle.plugins.DownloadUrl];
    window.ui = SwaggerUIBundle(options);
  </script>
</body>
</html>
"""


async def index(request: Request) -> HTTPResponse:
    page = index_page(request.app.ctx.config)
    return HTTPResponse(page, content_type="text/html; charset=utf-8")


async def document(request: Request, filename: str) -> HTTPResponse:
    found = documents(request.app.ctx.config).get(filename)
    if found is None:
        raise not_found(f"no API description {filename!r} (see {PREFIX}/)", "NotFound")
    body, content_type = found
    return HTTPResponse(body, content_type=content_type)


async def asset(request: Request, name: str) -> HTTPResponse:
    if name not in ASSETS:
        raise not_found(f"no Swagger UI asset {name!r}", "NotFound")
    return HTTPResponse(_asset(name), content_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})


ROUTES = [
    Route("", index, "swagger_ui"),
    Route("/assets/<name>", asset, "swagger_ui_asset"),
    Route("/<filename>", document, "swagger_document"),
]


def blueprint(config: Config) -> Blueprint:
    """The ``/swagger`` routes. The documents are read here, so a broken file stops start-up."""
    if not documents(config):
        log.warning("no API descriptions in %s: /swagger/ lists none", SWAGGER_DIR)
    index_page(config)
    return make_blueprint("swagger", PREFIX, ROUTES)
