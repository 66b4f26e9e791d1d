"""Swagger UI at /swagger/, in a real browser: headless Chromium over the DevTools protocol.

The page must render every operation from the bridge's own assets (no request leaves the bridge),
list every description in its dropdown, and "Try it out" must reach the API: GET /hosts answers
200, and so does a device's state with the examples the bridge filled in (its own database).
Chromium comes from Debian's package; the session fixture installs it when missing (as root).
"""

from __future__ import annotations

import pytest
import yaml

from mtango.api.swagger import SWAGGER_DIR
from tests.browser import Page

FILES = sorted(SWAGGER_DIR.glob("*.yaml"))


def operation_count(name: str, methods: tuple[str, ...] = ("get", "put", "post", "delete")) -> int:
    doc = yaml.safe_load((SWAGGER_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return sum(1 for item in doc["paths"].values() for method in item if method in methods)


def open_ui(page: Page, base: str) -> None:
    page.navigate(f"{base}/swagger/")
    page.wait_for("document.querySelectorAll('.opblock').length > 0")


def try_it_out(page: Page, op: str) -> tuple[str, str, str]:
    """Expand an operation, "Try it out", "Execute": (status, request URL, response body)."""
    page.evaluate(f"document.querySelector('{op}').scrollIntoView()")
    page.evaluate(f"document.querySelector('{op} .opblock-summary-control').click()")
    page.wait_for(f"!!document.querySelector('{op} .try-out__btn')")
    page.evaluate(f"document.querySelector('{op} .try-out__btn').click()")
    page.wait_for(f"!!document.querySelector('{op} .execute')")
    page.evaluate(f"document.querySelector('{op} .execute').click()")
    status = page.wait_for(
        f"document.querySelector('{op} .live-responses-table tbody .response-col_status')"
        "?.textContent.trim()"
    )
    url = page.evaluate(f"document.querySelector('{op} .request-url pre')?.textContent")
    body = page.evaluate(
        f"document.querySelector('{op} .live-responses-table .microlight')?.textContent"
    )
    return status, url, body


def test_swagger_ui_renders_every_operation_and_tries_hosts(page, bridge, control_system,
                                                           tmp_path):
    open_ui(page, bridge.base)
    # The rc3 description opens first: all its operations render.
    title = page.wait_for("document.querySelector('.info .title')?.textContent")
    assert "rc3" in title
    count = page.evaluate("document.querySelectorAll('.opblock.opblock-get').length")
    assert count == operation_count("rc3", ("get",)) == 26
    # The dropdown lists every description.
    options = page.evaluate(
        "Array.from(document.querySelectorAll('.topbar select option')).map(o => o.textContent)"
    )
    assert options == [f.stem for f in FILES]

    status, url, body = try_it_out(page, "#operations-entry-hosts")
    assert status == "200"
    assert url == f"{bridge.base}/tango/rest/rc3/hosts"
    assert control_system.tango_host.lower() in body

    page.evaluate("document.querySelector('#operations-entry-hosts').scrollIntoView()")
    shot = page.screenshot(tmp_path / "swagger-ui.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")

    # Nothing but the bridge (and inline data: images) was asked for: no CDN, no internet.
    foreign = [u for u in page.requested_urls()
               if not u.startswith((bridge.base + "/", "data:", "blob:"))]
    assert foreign == []


def test_try_it_out_uses_the_examples_of_this_bridge(page, bridge, control_system):
    """host/port examples name the bridge's database, so a device answers without typing."""
    open_ui(page, bridge.base)
    status, url, body = try_it_out(page, "#operations-device-device_state")
    assert status == "200"
    assert url == (f"{bridge.base}/tango/rest/rc3/hosts/{control_system.db_host}/"
                   f"{control_system.db_port}/devices/sys/tg_test/1/state")
    assert '"state": "ON"' in body


def test_other_descriptions_render_from_the_dropdown(page, bridge):
    open_ui(page, bridge.base)
    for path in FILES:
        page.navigate(f"{bridge.base}/swagger/?urls.primaryName={path.stem}")
        expected = operation_count(path.stem)
        page.wait_for(
            f"document.querySelector('.topbar select')?.value === '/swagger/{path.stem}.yaml' && "
            f"document.querySelectorAll('.opblock').length === {expected}"
        )
        errors = page.evaluate("document.querySelectorAll('.errors-wrapper').length")
        assert errors == 0, path.name


@pytest.mark.parametrize("name, op, path, expected", [
    ("sys", "#operations-sys-sys_cache", "/tango/rest/sys/cache/attributes", '"maxsize"'),
    ("ops", "#operations-health-health_live", "/health/live", '"status": "live"'),
])
def test_try_it_out_reaches_sys_and_the_root_level_routes(page, bridge, name, op, path, expected):
    """sys.yaml's server follows app_base; ops.yaml's is the server root ("/"), not "//"."""
    page.navigate(f"{bridge.base}/swagger/?urls.primaryName={name}")
    page.wait_for(f"!!document.querySelector('{op}')")
    status, url, body = try_it_out(page, op)
    assert status == "200"
    assert url == f"{bridge.base}{path}"
    assert expected in body
