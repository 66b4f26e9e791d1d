"""Pictures from the API: ``.../attributes/{attr}/value/image`` (PNG), ``.../value/plot`` and
``/epics/rest/v1/pvs/{pv}/plot`` (SVG, or PNG), through the real bridge and the demo stacks.

PNGs are decoded with Pillow and their pixels compared with the demo images (pixel (row, col) =
row*10+col, 5 wide and 3 high, values 0 to 24) scaled as ``mtango/imaging.py`` documents; SVGs
are parsed with xml.etree and the plotted values read back through their tick labels.
"""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mtango import imaging, plot
from mtango.demo.ioc import WAVEFORM_LENGTH

SVG = "{http://www.w3.org/2000/svg}"
V1 = "/epics/rest/v1"
DEMO = np.add.outer(np.arange(3) * 10, np.arange(5))  # the demo images' pixels, 3 rows x 5
VIRIDIS_FIRST, VIRIDIS_LAST = (68, 1, 84), (253, 231, 37)  # #440154, #fde725


def png_pixels(body: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(body)) as picture:
        assert picture.format == "PNG"
        return picture.mode, np.asarray(picture)


def image(bridge: Any, device_path: str, attr: str, query: str = "format=png") -> Any:
    return bridge.get(f"{device_path}/attributes/{attr}/value/image?{query}")


def scaled(low: float, high: float) -> np.ndarray:
    """The documented scale: linear from low..high to 0..255, rounded, clipped."""
    return np.rint((DEMO - low) * 255.0 / (high - low)).clip(0, 255).astype(np.uint8)


def reason(reply: Any) -> str:
    body = reply.json()
    assert body["quality"] == "FAILURE"
    return body["errors"][0]["reason"]


# -- value/image -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attr", ["double_image", "long_image"])
def test_numeric_image_is_scaled_from_its_minimum_to_its_maximum(bridge, device_path, proxy,
                                                                 attr):
    assert np.array_equal(proxy.read_attribute(attr).value, DEMO)  # the reference
    reply = image(bridge, device_path, attr)
    assert reply.status == 200
    assert reply.headers["content-type"] == "image/png"
    assert reply.headers["cache-control"] == "no-store"
    assert "last-modified" in reply.headers
    mode, pixels = png_pixels(reply.body)
    assert mode == "L" and pixels.shape == (3, 5)
    assert np.array_equal(pixels, scaled(0, 24))
    assert pixels[0, 0] == 0 and pixels[1, 0] == 106 and pixels[2, 4] == 255  # 10*255/24 = 106.25


def test_min_and_max_set_the_scale_and_clip(bridge, device_path):
    mode, pixels = png_pixels(image(bridge, device_path, "double_image",
                                    "format=png&min=5&max=15").body)
    assert mode == "L"
    assert np.array_equal(pixels, scaled(5, 15))
    assert pixels[0, 0] == 0 and pixels[2, 4] == 255  # 0 and 24 clipped
    assert pixels[1, 0] == 128  # 10 is half way: 127.5 rounds to 128
    # Only one bound given: the other is the image's own.
    _, low_only = png_pixels(image(bridge, device_path, "double_image", "format=png&min=12").body)
    assert np.array_equal(low_only, scaled(12, 24))


def test_uchar_image_is_shown_as_it_is(bridge, device_path, proxy):
    assert proxy.read_attribute("uchar_image").value.dtype == np.uint8
    mode, pixels = png_pixels(image(bridge, device_path, "uchar_image").body)
    assert mode == "L"
    assert np.array_equal(pixels, DEMO)  # no scaling: grey level = value
    _, with_scale = png_pixels(image(bridge, device_path, "uchar_image",
                                     "format=png&min=0&max=24").body)
    assert np.array_equal(with_scale, scaled(0, 24))


def test_viridis_colours_the_levels(bridge, device_path):
    mode, pixels = png_pixels(image(bridge, device_path, "double_image",
                                    "format=png&cmap=viridis").body)
    assert mode == "RGB" and pixels.shape == (3, 5, 3)
    assert tuple(pixels[0, 0]) == VIRIDIS_FIRST
    assert tuple(pixels[2, 4]) == VIRIDIS_LAST
    assert np.array_equal(pixels, imaging.VIRIDIS[scaled(0, 24)])
    # The table: 256 colours from dark violet to yellow, brightness never falling.
    assert imaging.VIRIDIS.shape == (256, 3)
    brightness = imaging.VIRIDIS.astype(float) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(brightness) >= 0) and brightness[-1] - brightness[0] > 150


def test_json_answer_is_the_read_shape_with_a_png_data_url(bridge, device_path):
    reply = image(bridge, device_path, "double_image", "cmap=viridis")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert set(body) == {"name", "value", "quality", "timestamp"}
    assert (body["name"], body["quality"]) == ("double_image", "ATTR_VALID")
    prefix = "data:image/png;base64,"
    assert body["value"].startswith(prefix)
    _, pixels = png_pixels(base64.b64decode(body["value"][len(prefix):]))
    _, raw = png_pixels(image(bridge, device_path, "double_image",
                              "format=png&cmap=viridis").body)
    assert np.array_equal(pixels, raw)
    plain = bridge.get(f"{device_path}/attributes/double_image/value").json()
    assert plain["name"] == body["name"] and isinstance(plain["timestamp"], int)


def test_non_finite_pixels_are_transparent():
    data = np.array([[0.0, np.nan], [np.inf, 10.0]])
    mode, pixels = png_pixels(imaging.image_png(data, 2, 2))
    assert mode == "LA"
    assert pixels[..., 1].tolist() == [[255, 0], [0, 255]]
    assert pixels[0, 0, 0] == 0 and pixels[1, 1, 0] == 255  # scaled on the finite pixels only
    mode, pixels = png_pixels(imaging.image_png(data, 2, 2, cmap="viridis"))
    assert mode == "RGBA" and pixels[..., 3].tolist() == [[255, 0], [0, 255]]


def test_encoded_jpeg_is_shown_as_it_is():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2), (200, 10, 10)).save(buffer, format="JPEG", quality=100)
    mode, pixels = png_pixels(imaging.encoded_png("JPEG_RGB", buffer.getvalue()))
    assert mode == "RGB" and pixels.shape == (2, 4, 3)
    assert np.abs(pixels.astype(int) - [200, 10, 10]).max() <= 3  # JPEG's rounding
    with pytest.raises(imaging.NotAnImage):
        imaging.encoded_png("utf8", b"not a picture")


def _decoded(proxy: Any, attr: str, decode: str) -> np.ndarray:
    """The image as PyTango's own decoder reads it: the reference for Tango's encodings."""
    import tango

    read = proxy.read_attribute(attr, extract_as=tango.ExtractAs.Nothing)
    return np.asarray(getattr(tango.EncodedAttribute(), decode)(read))


def test_encoded_gray16_is_a_numeric_image(bridge, device_path, proxy):
    grey = _decoded(proxy, "encoded_gray16", "decode_gray16")
    assert np.array_equal(grey, DEMO * 1000 + 300)  # the demo's picture, 16-bit
    assert proxy.read_attribute("encoded_gray16").value[0] == "GRAY16"
    mode, pixels = png_pixels(image(bridge, device_path, "encoded_gray16").body)
    assert mode == "L" and pixels.shape == (3, 5)
    def levels(low: float, high: float) -> np.ndarray:
        # The documented scale; a tie such as 212.5 rounds as the float product does.
        return np.rint((grey - float(low)) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)

    assert np.array_equal(pixels, levels(300, 24300))  # min..max, as every numeric image
    assert pixels[0, 0] == 0 and pixels[1, 0] == 106 and pixels[2, 4] == 255
    _, clipped = png_pixels(image(bridge, device_path, "encoded_gray16",
                                  "format=png&min=5300&max=15300&cmap=viridis").body)
    assert np.array_equal(clipped, imaging.VIRIDIS[levels(5300, 15300)])


def test_encoded_rgb24_and_jpeg_are_shown_as_they_are(bridge, device_path, proxy):
    # decode_rgb32 gives 32-bit pixels whose bytes are red, green, blue, alpha in memory.
    rgba = _decoded(proxy, "encoded_rgb24", "decode_rgb32").astype(np.uint32)
    rgb = np.stack([rgba & 255, (rgba >> 8) & 255, (rgba >> 16) & 255], axis=-1)
    assert rgb.shape == (3, 5, 3) and rgb[2, 4].tolist() == [240, 200, 200]  # (col*60, row*100)
    assert proxy.read_attribute("encoded_rgb24").value[0] == "RGB24"
    mode, pixels = png_pixels(image(bridge, device_path, "encoded_rgb24",
                                    "format=png&min=0&max=1&cmap=viridis").body)
    assert mode == "RGB"
    assert np.array_equal(pixels, rgb)  # neither scaled nor coloured
    assert proxy.read_attribute("encoded_jpeg").value[0] == "JPEG_RGB"
    mode, pixels = png_pixels(image(bridge, device_path, "encoded_jpeg").body)
    assert mode == "RGB" and pixels.shape == (3, 5, 3)
    fmt, jpeg = proxy.read_attribute("encoded_jpeg").value
    with Image.open(io.BytesIO(bytes(jpeg))) as decoded:
        assert np.array_equal(pixels, np.asarray(decoded.convert("RGB")))  # the JPEG as it is
    assert np.abs(pixels.astype(int) - rgb).mean() <= 20  # JPEG's colour blur: the same picture


def test_raw_tango_encodings():
    """Width and height (big-endian 16 bits), then the pixels; wrong lengths are not images."""
    header = (2).to_bytes(2, "big") + (1).to_bytes(2, "big")
    assert imaging.tango_raw_image("GRAY8", header + b"\x01\xff").tolist() == [[1, 255]]
    assert imaging.tango_raw_image("GRAY16", header + b"\x01\x02\xff\xfe").tolist() == [
        [0x0102, 0xFFFE]]
    assert imaging.tango_raw_image("RGB24", header + bytes(range(6))).tolist() == [
        [[0, 1, 2], [3, 4, 5]]]
    assert imaging.tango_raw_image("JPEG_RGB", b"whatever") is None
    for fmt, data in (("GRAY8", header + b"\x01"), ("GRAY16", header + b"\x01\x02"),
                      ("RGB24", header + bytes(7)), ("GRAY8", b"\x00\x01")):
        with pytest.raises(imaging.NotAnImage):
            imaging.tango_raw_image(fmt, data)
    mode, pixels = png_pixels(imaging.encoded_png("GRAY8", header + b"\x07\x09"))
    assert mode == "L" and pixels.tolist() == [[7, 9]]  # 8-bit: as it is


@pytest.mark.parametrize("attr", ["double_scalar", "double_spectrum_ro", "string_scalar",
                                  "encoded_scalar"])
def test_what_is_not_an_image_is_a_bad_request(bridge, device_path, attr):
    reply = image(bridge, device_path, attr)
    assert reply.status == 400
    assert reason(reply) == "NotAnImage"
    assert attr in reply.json()["errors"][0]["description"] or attr == "encoded_scalar"


@pytest.mark.parametrize("query", ["cmap=jet", "min=3&max=2", "min=abc", "max=nan",
                                   "min=1e999", "format=gif"])
def test_bad_image_parameters_are_refused(bridge, device_path, query):
    reply = image(bridge, device_path, "double_image", query)
    assert reply.status == 400
    assert reason(reply) == "BadParameter"


def test_image_read_failures_answer_like_value_reads(bridge, device_path, host_path):
    failed = image(bridge, device_path, "no_value")
    assert failed.status == 200 and failed.json()["quality"] == "FAILURE"  # rc3: Tango's 200
    unknown = image(bridge, device_path, "nope")
    assert unknown.status == 200 and reason(unknown) == "API_AttrNotFound"
    elsewhere = bridge.get("/tango/rest/rc3/hosts/elsewhere/10000/devices/sys/tg_test/1"
                           "/attributes/double_image/value/image")
    assert elsewhere.status == 403


# -- value/plot ------------------------------------------------------------------------------------


def parse_svg(reply: Any) -> ET.Element:
    assert reply.status == 200, reply.body[:500]
    assert reply.headers["content-type"] == "image/svg+xml"
    assert reply.headers["cache-control"] == "no-store"
    assert "last-modified" in reply.headers
    root = ET.fromstring(reply.body)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == cls]


def group(root: ET.Element, cls: str) -> ET.Element:
    return next(g for g in root.iter(f"{SVG}g") if g.get("class") == cls)


def plotted(root: ET.Element) -> list[list[tuple[float, float]]]:
    """The pixel points of every line of the trace."""
    return [[tuple(map(float, p.split(","))) for p in line.get("points", "").split()]
            for line in group(root, "trace").iter(f"{SVG}polyline")]


def values_back(root: ET.Element, points: list[tuple[float, float]]) -> list[float]:
    """The plotted values, read back through the first and last y tick labels."""
    ticks = group(root, "y-ticks")
    labels = [(float(t.get("y", "0")) - 4, float(t.text or "")) for t in ticks.iter(f"{SVG}text")]
    (y0, v0), (y1, v1) = labels[0], labels[-1]
    return [v0 + (y - y0) * (v1 - v0) / (y1 - y0) for _, y in points]


def test_spectrum_plot_has_axes_units_and_every_value(bridge, device_path, proxy):
    expected = list(proxy.read_attribute("double_spectrum_ro").value)
    root = parse_svg(bridge.get(f"{device_path}/attributes/double_spectrum_ro/value/plot"))
    assert texts(root, "title") == ["double_spectrum_ro"]
    assert texts(root, "x-label") == ["index"]
    assert texts(root, "y-label") == ["value [mm]"]  # the unit from the attribute's info
    x_ticks = [t.text for t in group(root, "x-ticks").iter(f"{SVG}text")]
    assert x_ticks == ["0", "1", "2", "3"]
    assert len(list(group(root, "y-ticks").iter(f"{SVG}text"))) >= 2
    lines = plotted(root)
    assert len(lines) == 1 and len(lines[0]) == len(expected) == 4
    assert values_back(root, lines[0]) == pytest.approx(expected, abs=0.01)
    xs = [x for x, _ in lines[0]]
    assert xs == sorted(xs) and len(set(xs)) == 4


def test_plot_without_unit_booleans_and_gaps(bridge, device_path):
    root = parse_svg(bridge.get(f"{device_path}/attributes/long_spectrum/value/plot"))
    assert texts(root, "y-label") == ["value"]
    assert values_back(root, plotted(root)[0]) == pytest.approx([1, -2, 3, -4, 5], abs=0.01)
    booleans = parse_svg(bridge.get(f"{device_path}/attributes/boolean_spectrum/value/plot"))
    assert values_back(booleans, plotted(booleans)[0]) == pytest.approx([1, 0, 1], abs=0.01)
    # [1, inf, -inf, nan]: only the first value is finite, a dot with no line.
    gaps = parse_svg(bridge.get(f"{device_path}/attributes/inf_spectrum/value/plot"))
    assert plotted(gaps) == []
    assert len(list(group(gaps, "trace").iter(f"{SVG}circle"))) == 1


def test_gaps_split_the_line():
    root = ET.fromstring(plot.svg([1.0, 2.0, float("nan"), 4.0, 5.0, 6.0], "gappy"))
    lines = [line.get("points", "").split() for line in root.iter(f"{SVG}polyline")]
    assert [len(points) for points in lines] == [2, 3]


def test_large_spectrum_is_reduced_to_its_envelope(bridge, device_path):
    root = parse_svg(bridge.get(f"{device_path}/attributes/big_spectrum/value/plot?width=400"))
    (line,) = plotted(root)
    columns = 400 - 72 - 24  # the plot area's width in pixels
    assert len(line) == 2 * columns
    ys = [y for _, y in line]
    top_tick = float(next(group(root, "y-ticks").iter(f"{SVG}line")).get("y1", "0"))
    assert max(ys) <= top_tick  # inside the axes (normal noise: about -5 to 5)


def test_plot_as_png(bridge, device_path):
    reply = bridge.get(f"{device_path}/attributes/double_spectrum_ro/value/plot"
                       "?format=png&width=300&height=200")
    assert reply.status == 200
    assert reply.headers["content-type"] == "image/png"
    assert reply.headers["cache-control"] == "no-store"
    with Image.open(io.BytesIO(reply.body)) as picture:
        assert picture.size == (300, 200)
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    line = (pixels == [0x1F, 0x77, 0xB4]).all(axis=1).sum()
    black = (pixels == [0, 0, 0]).all(axis=1).sum()
    assert line > 100 and black > 100  # the line and the axes with their labels


@pytest.mark.parametrize("attr", ["double_scalar", "double_image", "string_spectrum", "State"])
def test_what_is_not_a_spectrum_of_numbers_is_not_plotted(bridge, device_path, attr):
    reply = bridge.get(f"{device_path}/attributes/{attr}/value/plot")
    assert reply.status == 400
    assert reason(reply) == "NotPlottable"


@pytest.mark.parametrize("query", ["format=jpeg", "width=10", "height=100000", "width=abc"])
def test_bad_plot_parameters_are_refused(bridge, device_path, query):
    reply = bridge.get(f"{device_path}/attributes/double_spectrum_ro/value/plot?{query}")
    assert reply.status == 400
    assert reason(reply) == "BadParameter"


# -- EPICS -----------------------------------------------------------------------------------------


def test_waveform_plot_has_its_units_and_every_element(epics_bridge):
    value = epics_bridge.get(f"{V1}/pvs/cp:waveform/value").json()["value"]
    assert len(value) == WAVEFORM_LENGTH
    root = parse_svg(epics_bridge.get(f"{V1}/pvs/cp:waveform/plot"))
    assert texts(root, "title") == ["cp:waveform"]
    assert texts(root, "y-label") == ["value [V]"]
    (line,) = plotted(root)
    assert len(line) == WAVEFORM_LENGTH
    assert values_back(root, line) == pytest.approx(value, abs=0.01)


def test_waveform_plot_options(epics_bridge):
    root = parse_svg(epics_bridge.get(f"{V1}/pvs/cp:int_waveform/plot?count=5"))
    assert texts(root, "y-label") == ["value"]
    assert values_back(root, plotted(root)[0]) == pytest.approx([0, 1, 2, 3, 4], abs=0.01)
    png = epics_bridge.get(f"{V1}/pvs/cp:waveform/plot?format=png&width=500&height=300")
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.body)) as picture:
        assert picture.size == (500, 300)


@pytest.mark.parametrize("pv", ["cp:double", "cp:string_array", "cp:string.VAL$"])
def test_pv_that_is_not_an_array_of_numbers_is_not_plotted(epics_bridge, pv):
    reply = epics_bridge.get(f"{V1}/pvs/{pv}/plot")
    assert reply.status == 400
    assert reason(reply) == "NotPlottable"


def test_pv_plot_follows_the_read_rules(epics_bridge):
    assert epics_bridge.get(f"{V1}/pvs/cp:waveform/plot?format=svgz").status == 400
    bad = epics_bridge.get(f"{V1}/pvs/%zz/plot")  # not percent-encoded UTF-8: never searched
    assert bad.status == 400 and reason(bad) == "BadEncoding"
