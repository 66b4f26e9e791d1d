"""The built-in web page (``/``), in a real browser: headless Chromium over the DevTools protocol.

What is checked is what a person sees, on the page (the DOM and the pixels of its canvases), not
on the API: navigation from the databases to a device and to EPICS PVs, a changing value that
changes, values that turn visibly stale when their device server or IOC stops (and live again
when it is back), a spectrum drawn as a rising line and an image drawn pixel for pixel from the
demo's known data, write controls only where writes are allowed (and one attribute write and one
command run from the page, checked on the device), values that turn stale when the bridge itself
goes away, and no request to anything but the bridge.
Screenshots go to each test's temporary directory (their paths are printed).
"""

from __future__ import annotations

import base64
import io
import json

import pytest
import tango
from PIL import Image

from mtango.config import Config
from mtango.demo import DEMO_DEVICE
from tests.bridge import InProcessBridge, http, poll
from tests.browser import Page
from tests.conftest import EPICS_TIMEOUT_MS, TEST_TIMEOUT_MS, VICTIM_DEVICE, VICTIM_SERVER

PLOT_LINE = (21, 101, 192)  # #1565c0, the colour app.js draws lines with


def js(value: str) -> str:
    return json.dumps(value)


def row(kind: str, name: str) -> str:
    """A JavaScript expression for the row of an attribute (kind "attr") or a PV ("pv")."""
    return f"document.querySelector('[data-{kind}=' + {js(json.dumps(name))} + ']')"


def text_of(page: Page, kind: str, name: str) -> str | None:
    return page.evaluate(f"{row(kind, name)}?.querySelector('.v')?.textContent ?? null")


def is_fresh(page: Page, kind: str, name: str) -> bool:
    return bool(page.evaluate(
        f"(r => !!r && r.dataset.stale === 'false' && !r.classList.contains('waiting'))"
        f"({row(kind, name)})"))


def stale_note(page: Page, kind: str, name: str) -> str | None:
    """The visible staleness text of a row, when the row is marked stale."""
    return page.evaluate(
        f"(r => r && r.dataset.stale === 'true' && r.querySelector('.stale-note').offsetParent"
        f" !== null ? r.querySelector('.stale-note').textContent : null)({row(kind, name)})")


def canvas_image(page: Page, kind: str, name: str) -> Image.Image | None:
    data = page.evaluate(f"{row(kind, name)}?.querySelector('canvas')?.toDataURL('image/png')")
    if not data:
        return None
    return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")


def line_rows(image: Image.Image, x: int) -> list[int]:
    """The rows of column ``x`` where the plot's line is drawn."""
    found = []
    for y in range(image.height):
        r, g, b = image.getpixel((x, y))[:3]
        if abs(r - PLOT_LINE[0]) + abs(g - PLOT_LINE[1]) + abs(b - PLOT_LINE[2]) < 90:
            found.append(y)
    return found


def screenshot(page: Page, path, width: int) -> None:
    page.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": 1400, "deviceScaleFactor": 1, "mobile": width < 500})
    page.wait_for(f"window.innerWidth === {width}")
    page.screenshot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {path}")


def only_the_bridge(page: Page, base: str) -> None:
    requested = page.requested_urls()
    assert any(u.startswith(f"{base}/live/stream?") for u in requested)
    foreign = [u for u in requested if not u.startswith(base + "/")]
    assert foreign == []


def open_device(page: Page, base: str, tango_host: str, device: str) -> None:
    page.navigate(f"{base}/#/tango/{tango_host}/{device}")
    page.wait_for("document.querySelectorAll('#attributes [data-attr]').length > 5")


# -- HTTP: the page beside the APIs --------------------------------------------------------------


def test_browsers_get_the_page_at_the_root_and_api_clients_their_404(bridge):
    for accept in (None, "*/*", "application/json", "text/html;q=0"):
        reply = bridge.get("/", headers={"Accept": accept} if accept else {})
        assert reply.status == 404, accept
        assert reply.json()["errors"][0]["reason"] == "NotFound"
        assert reply.headers["content-type"] == "application/json"
    reply = bridge.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-cache"
    assert "Accept" in reply.headers["vary"]
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    html = reply.body.decode()
    assert '<meta name="mtango-app-base" content="/tango/rest">' in html
    assert "{{" not in html
    again = bridge.get("/", headers={"Accept": "text/html", "If-None-Match": reply.headers["etag"]})
    assert again.status == 304 and again.body == b""
    # The APIs are where they were.
    assert bridge.get("/tango/rest").json()["rc3"].endswith("/tango/rest/rc3")


@pytest.mark.parametrize("name, content_type", [
    ("app.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
])
def test_the_page_files_are_cached_and_revalidated(bridge, name, content_type):
    page = bridge.get("/", headers={"Accept": "text/html"}).body.decode()
    reply = bridge.get(f"/web/{name}")
    assert reply.status == 200
    assert reply.headers["content-type"] == content_type
    assert reply.headers["cache-control"] == "public, max-age=3600"
    etag, modified = reply.headers["etag"], reply.headers["last-modified"]
    # The page names each file with its version: a new release is fetched at once.
    assert f"/web/{name}?v={etag.strip(chr(34))}" in page
    assert bridge.get(f"/web/{name}", headers={"If-None-Match": etag}).status == 304
    assert bridge.get(f"/web/{name}", headers={"If-Modified-Since": modified}).status == 304
    assert bridge.get(f"/web/{name}", headers={"If-None-Match": '"other"'}).status == 200


def test_only_the_page_files_are_served(bridge):
    for path in ("/web/index.html", "/web/../defaults.py", "/web/nope.js", "/web/"):
        reply = bridge.get(path)
        assert reply.status == 404, path
        assert reply.json()["quality"] == "FAILURE"


def test_the_page_follows_app_base(control_system):
    running = InProcessBridge(Config(tango_host=control_system.tango_host,
                                     app_base="/api/tango")).start()
    try:
        html = running.get("/", headers={"Accept": "text/html"}).body.decode()
        assert '<meta name="mtango-app-base" content="/api/tango">' in html
        assert 'href="/api/tango/sys"' in html
    finally:
        running.stop()


def test_access_says_whether_writes_are_allowed(bridge, control_system, tango_host):
    target = f"{tango_host}/{DEMO_DEVICE}/double_scalar"
    body = bridge.get(f"/tango/rest/sys/access?tango={target}&pv=x:y").json()
    assert body == {"user": "anonymous", "auth": "none", "writes": False, "targets": [
        {"target": target, "kind": "tango", "write": False, "reason": "WritesOff"},
        {"target": "x:y", "kind": "pv", "write": False, "reason": "WritesOff"}]}
    assert bridge.get("/tango/rest/sys/access?tango=other.example:10000/a/b/c/d").status == 403
    assert bridge.get("/tango/rest/sys/access?tango=nohost/a/b/c").status == 400
    running = InProcessBridge(Config(tango_host=control_system.tango_host, writes="on")).start()
    try:
        body = running.get(f"/tango/rest/sys/access?tango={target}").json()
        assert body["writes"] is True
        assert body["targets"] == [{"target": target, "kind": "tango", "write": True}]
    finally:
        running.stop()


# -- in the browser --------------------------------------------------------------------------------


def test_a_device_live_with_its_plots_and_pictures(page, bridge, control_system, tmp_path):
    host = control_system.tango_host
    page.navigate(f"{bridge.base}/")
    # databases -> devices -> the demo device, by following the page's own links
    page.wait_for(f"!!document.querySelector('#databases a[href=\"#/tango/{host}\"]')")
    page.evaluate(f"document.querySelector('#databases a[href=\"#/tango/{host}\"]').click()")
    link = f"#devices a[href=\"#/tango/{host}/{DEMO_DEVICE}\"]"
    page.wait_for(f"!!document.querySelector('{link}')")
    page.evaluate(f"document.querySelector('{link}').click()")
    page.wait_for("document.querySelectorAll('#attributes [data-attr]').length > 20")
    assert page.evaluate("location.hash") == f"#/tango/{host}/{DEMO_DEVICE}"

    # State with its colour, status, units
    page.wait_for("document.querySelector('#state').textContent === 'ON'")
    assert page.evaluate("getComputedStyle(document.querySelector('#state'))"
                         ".backgroundColor") == "rgb(0, 192, 0)"
    assert "ON state" in page.evaluate("document.querySelector('#status').textContent")
    assert page.evaluate(f"{row('attr', 'double_scalar')}.querySelector('.unit')"
                         ".textContent") == "mm"

    # Integers beyond 2^53 are shown exactly, not as the nearest double (...552000).
    poll("ulong64_scalar shown", lambda: is_fresh(page, "attr", "ulong64_scalar"))
    assert text_of(page, "attr", "ulong64_scalar") == str(2**64 - 2)

    # A value pushed ten times a second changes on the page.
    first = poll("pushed_counter shown", lambda: is_fresh(page, "attr", "pushed_counter")
                 and text_of(page, "attr", "pushed_counter"))
    poll("pushed_counter changing", lambda: text_of(page, "attr", "pushed_counter") != first,
         timeout=10)

    # A spectrum as a line: [1.25, 2.25, 3.25, 4.25] rises from left to right.
    plot = poll("double_spectrum_ro drawn", lambda: canvas_image(page, "attr",
                                                                 "double_spectrum_ro"))
    left, right = line_rows(plot, 60), line_rows(plot, plot.width - 14)
    assert left and right, (left, right)
    assert min(left) > max(right) + 100  # canvas rows grow downwards
    assert text_of(page, "attr", "double_spectrum_ro").startswith("[4] 1.25, 2.25")

    # An image pixel for pixel: (row, col) = row*10+col, grey from its minimum to its maximum.
    image = poll("double_image drawn", lambda: canvas_image(page, "attr", "double_image"))
    assert image.size == (5, 3)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((4, 2)) == (255, 255, 255)
    assert image.getpixel((0, 1)) == (106, 106, 106)
    assert image.getpixel((4, 0))[0] < image.getpixel((0, 1))[0] < image.getpixel((0, 2))[0]
    assert page.evaluate(f"{row('attr', 'double_image')}.querySelector('canvas')"
                         ".getBoundingClientRect().width") >= 200  # scaled up to be seen
    # Tango's encoded images: GRAY16 scaled the same way, RGB24 as it is, JPEG decoded.
    grey = poll("encoded_gray16 drawn", lambda: canvas_image(page, "attr", "encoded_gray16"))
    assert grey.size == (5, 3)
    assert [grey.getpixel(p) for p in ((0, 0), (0, 1), (4, 2))] == [
        (0, 0, 0), (106, 106, 106), (255, 255, 255)]
    rgb = poll("encoded_rgb24 drawn", lambda: canvas_image(page, "attr", "encoded_rgb24"))
    assert rgb.size == (5, 3)
    assert [rgb.getpixel(p) for p in ((0, 0), (4, 0), (4, 2))] == [
        (0, 0, 200), (240, 0, 200), (240, 200, 200)]  # (col*60, row*100, 200)
    assert "encoded (RGB24)" in text_of(page, "attr", "encoded_rgb24")
    def jpeg_drawn() -> Image.Image | None:  # decoded asynchronously into a new canvas
        drawn = canvas_image(page, "attr", "encoded_jpeg")
        return drawn if drawn is not None and drawn.size == (5, 3) else None

    jpeg = poll("encoded_jpeg drawn", jpeg_drawn)
    assert jpeg.getpixel((0, 0))[2] > 120 and jpeg.getpixel((4, 2))[0] > 180  # blue, then pink
    assert canvas_image(page, "attr", "encoded_scalar") is None  # "utf8": no picture

    # An attribute that always fails is shown as such, not as a value.
    assert "DemoNoValue" in poll("no_value stale", lambda: stale_note(page, "attr", "no_value"))

    # Commands with their types, properties; writes are off: no control is offered.
    assert page.evaluate("document.querySelector('[data-cmd=\"DevDouble\"] .types')"
                         ".textContent") == "DevDouble → DevDouble"
    assert "mythical_property" in page.evaluate("document.querySelector('#properties')"
                                                ".textContent")
    assert page.evaluate("document.querySelectorAll('form.write, button[type=submit]"
                         ":not(form.inline button)').length") == 0

    page.evaluate(f"{row('attr', 'double_spectrum_ro')}.scrollIntoView()")
    screenshot(page, tmp_path / "device-desktop.png", 1280)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, tmp_path / "device-phone.png", 375)
    # On a phone nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    only_the_bridge(page, bridge.base)


def test_a_stopped_device_server_turns_its_values_stale(page, bridge, control_system, tmp_path):
    open_device(page, bridge.base, control_system.tango_host, VICTIM_DEVICE)
    poll("double_scalar live", lambda: is_fresh(page, "attr", "double_scalar"))
    assert stale_note(page, "attr", "double_scalar") is None
    control_system.stop_server(VICTIM_SERVER)
    try:
        note = poll("double_scalar stale", lambda: stale_note(page, "attr", "double_scalar"),
                    timeout=60)
        assert note.strip()
        assert page.evaluate(f"getComputedStyle({row('attr', 'double_scalar')}"
                             ".querySelector('.v')).textDecorationLine") == "line-through"
        screenshot(page, tmp_path / "device-stale.png", 1280)
    finally:
        control_system.restart_server(VICTIM_SERVER)
    poll("double_scalar live again", lambda: is_fresh(page, "attr", "double_scalar"),
         timeout=60)


@pytest.fixture
def page_ioc(tmp_path_factory):
    """A caproto IOC of this module's own: the test stops it."""
    from mtango.demo.ioc import start_ioc

    ioc = start_ioc("caproto", prefix="wp:", workdir=tmp_path_factory.mktemp("ioc-wp"))
    yield ioc
    ioc.stop()


def test_epics_watch_list_live_then_stale(page, page_ioc, tmp_path):
    running = InProcessBridge(Config(epics_ca_addr_list=(page_ioc.address,),
                                     epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
                                     epics_read_timeout_ms=EPICS_TIMEOUT_MS)).start()
    counter, waveform, alarm = (page_ioc.pv(n) for n in ("counter", "waveform", "alarm"))
    try:
        page.navigate(f"{running.base}/#/epics")
        page.wait_for("!!document.querySelector('#add-pvs')")
        # Typed (pasted) names, one form submit: the view's URL names them.
        page.evaluate(f"document.querySelector('#add-pvs').value = {js(counter + ', ' + waveform)}"
                      f" + '\\n' + {js(alarm)}")
        page.evaluate("document.querySelector('#add-pvs').form.querySelector('button').click()")
        page.wait_for(f"!!{row('pv', alarm)}")
        assert page.evaluate("location.hash") == f"#/epics?pv={counter}&pv={waveform}&pv={alarm}"

        first = poll("counter shown", lambda: is_fresh(page, "pv", counter)
                     and text_of(page, "pv", counter))
        poll("counter changing", lambda: text_of(page, "pv", counter) != first, timeout=10)
        assert page.evaluate(f"{row('pv', counter)}.querySelector('.unit').textContent") == "s"
        poll("alarm's severity", lambda: page.evaluate(f"{row('pv', alarm)}?.dataset.severity")
             == "MAJOR")
        # The waveform, sin(i/10) for i < 100: a line that starts in the middle and rises.
        plot = poll("waveform drawn", lambda: canvas_image(page, "pv", waveform))
        start, peak = line_rows(plot, 58), line_rows(plot, 56 + round(15.7 / 99 * 414))
        assert start and peak and min(start) > max(peak) + 50, (start, peak)
        assert page.evaluate("document.querySelectorAll('form.write').length") == 0
        screenshot(page, tmp_path / "epics.png", 1280)

        page_ioc.stop()
        note = poll("counter stale", lambda: stale_note(page, "pv", counter), timeout=60)
        assert "EPICS_DISCONNECTED" in note
        poll("waveform stale", lambda: stale_note(page, "pv", waveform))
        screenshot(page, tmp_path / "epics-stale.png", 1280)
        only_the_bridge(page, running.base)
    finally:
        running.stop()


def test_writes_from_the_page(page, control_system, tmp_path):
    running = InProcessBridge(Config(tango_host=control_system.tango_host, writes="on",
                                     tango_timeout_ms=TEST_TIMEOUT_MS)).start()
    device = tango.DeviceProxy(control_system.trl(VICTIM_DEVICE))
    try:
        open_device(page, running.base, control_system.tango_host, VICTIM_DEVICE)
        form = f"{row('attr', 'long_scalar_w')}.querySelector('form.write')"
        page.wait_for(f"!!{form}")
        # Read-only attributes get no control.
        assert page.evaluate(f"!!{row('attr', 'short_scalar_ro')}.querySelector('form')") is False
        new = device.read_attribute("long_scalar_w").value + 17
        page.evaluate(f"{form}.querySelector('input').value = '{new}'")
        page.evaluate(f"{form}.querySelector('button').click()")
        answer = page.wait_for(f"(o => o.dataset.ok === 'true' && o.textContent !== '…' && "
                               f"o.textContent)({form}.querySelector('output'))")
        assert str(new) in answer
        assert device.read_attribute("long_scalar_w").value == new
        # A refused value: the error is shown, nothing written.
        page.evaluate(f"{form}.querySelector('input').value = 'many'")
        page.evaluate(f"{form}.querySelector('button').click()")
        error = page.wait_for(f"(o => o.dataset.ok === 'false' && o.textContent)"
                              f"({form}.querySelector('output'))")
        assert "many" in error or "Bad" in error
        assert device.read_attribute("long_scalar_w").value == new
        # A spectrum, as a JSON array.
        spectrum = f"{row('attr', 'double_spectrum')}.querySelector('form.write')"
        assert page.evaluate(f"{spectrum}.querySelector('input').placeholder") == "[1, 2, 3]"
        page.evaluate(f"{spectrum}.querySelector('input').value = '[4.5, 5.5, 6.5]'")
        page.evaluate(f"{spectrum}.querySelector('button').click()")
        answer = page.wait_for(f"(o => o.dataset.ok === 'true' && o.textContent !== '…' && "
                               f"o.textContent)({spectrum}.querySelector('output'))")
        assert "[4.5,5.5,6.5]" in answer
        assert list(device.read_attribute("double_spectrum").value) == [4.5, 5.5, 6.5]

        command = "document.querySelector('[data-cmd=\"DevDouble\"] form.write')"
        page.evaluate(f"{command}.querySelector('input').value = '2.5'")
        page.evaluate(f"{command}.querySelector('button').click()")
        output = page.wait_for(f"(o => o.dataset.ok === 'true' && o.textContent !== '…' && "
                               f"o.textContent)({command}.querySelector('output'))")
        assert output == "output: 2.5"
        screenshot(page, tmp_path / "device-writes.png", 1280)
        only_the_bridge(page, running.base)
        poll("long_scalar_w live", lambda: is_fresh(page, "attr", "long_scalar_w"))
    finally:
        running.stop()
    # The bridge itself is gone: every value turns stale, and the page says it lost the bridge.
    note = poll("stale once the bridge stopped", lambda: stale_note(page, "attr", "long_scalar_w"))
    assert "connection to the bridge was lost" in note
    assert page.evaluate("document.querySelector('#live').dataset.state") == "lost"


def test_the_page_needs_no_request_elsewhere_for_its_assets(bridge):
    """Its files name nothing outside the bridge (no CDN, no fonts from elsewhere)."""
    page = bridge.get("/", headers={"Accept": "text/html"}).body.decode()
    for text in (page, *(http("GET", f"{bridge.base}/web/{n}").body.decode()
                         for n in ("app.js", "style.css"))):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def key(page: Page, name: str, code: int) -> None:
    for kind in ("rawKeyDown", "keyUp"):
        page.send("Input.dispatchKeyEvent", {"type": kind, "key": name, "code": name,
                                             "windowsVirtualKeyCode": code})


def test_the_keyboard_reaches_a_device(page, bridge, control_system):
    """Tab to the device's link (a visible focus ring on the way), Enter opens it."""
    host = control_system.tango_host
    page.navigate(f"{bridge.base}/#/tango/{host}?wildcard=sys/tg_test/*")
    link = f"#devices a[href=\"#/tango/{host}/{DEMO_DEVICE}\"]"
    page.wait_for(f"!!document.querySelector('{link}')")
    assert page.evaluate("document.querySelector('#devices').querySelectorAll('a').length") == 1
    for _ in range(30):
        key(page, "Tab", 9)
        if page.evaluate(f"document.activeElement === document.querySelector('{link}')"):
            break
    else:
        raise AssertionError("Tab never reached the device's link")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    key(page, "Enter", 13)
    page.wait_for(f"location.hash === '#/tango/{host}/{DEMO_DEVICE}'")
    page.wait_for("document.querySelectorAll('#attributes [data-attr]').length > 20")
