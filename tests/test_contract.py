"""Contract fuzzing: schemathesis against running bridges, for every GET operation described.

For every GET operation of every file in swagger/ (main.yaml, rc3.yaml, sys.yaml, ops.yaml,
epics.yaml, subscriptions.yaml and pvws.yaml: the files the bridge serves, live.yaml aside, whose
one operation is an endless stream; test_openapi.py checks it serves
them as written) schemathesis generates requests, valid and invalid ones, sends them to an
in-process bridge and checks the answers: no 5xx, the status is documented, the body matches the
documented schema, valid requests are accepted and invalid ones refused, and every error answers
the FAILURE body (``every_error_is_a_failure_body``).

Two GET operations do not answer at once by design. rc3 long polling waits up to ``timeout`` ms
(30 s without one) for an event: it is fuzzed with every wait the bridge would accept cut to a
fraction of a second (``_keep_long_polls_short``). A subscription's event stream never ends: it is
not fuzzed at all.

Random names rarely reach anything real (every request would be a 403, an unknown device or a
refused PV), so a share of the requests is aimed at the demo Tango database, its devices,
attributes, commands and properties, and at the demo IOC's PVs: those answer real values of every
Tango and DBR type, which are then checked against the schemas too.
"""

from __future__ import annotations

import json
import random
import re
import urllib.request
from math import inf
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
)

from mtango.api.swagger import SWAGGER_DIR
from mtango.config import Config
from mtango.demo import ALARM_DEVICE, DEMO_DEVICE
from tests.bridge import InProcessBridge, http
from tests.conftest import EPICS_TIMEOUT_MS, VICTIM_DEVICE

EXAMPLES_PER_OPERATION = 5
CONFIG = {
    "cache": {"enabled": False},
    "generation": {"max-examples": EXAMPLES_PER_OPERATION},
    "phases": {
        "stateful": {"enabled": False},
        # Requests come from the schema only (plus the aiming below), not from values harvested
        # from earlier answers or rewritten after 4xx answers: each case stands on its own.
        "fuzzing": {
            "extra-data-sources": {"responses": False},
            "error-feedback": {"enabled": False},
        },
    },
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
}
# Names that exist in the demo stacks (tests/conftest.py), and a few that do not.
DEVICES = [DEMO_DEVICE, DEMO_DEVICE.upper(), VICTIM_DEVICE, ALARM_DEVICE,
           "dserver/DemoTangoTest/demo", "sys/database/2", "no/such/device"]
ATTRIBUTES = ["double_scalar", "long64_scalar", "ulong64_scalar", "boolean_scalar",
              "string_scalar", "enum_scalar", "double_spectrum", "string_spectrum",
              "boolean_spectrum", "double_image", "uchar_image", "encoded_scalar", "no_value",
              "nan_scalar", "inf_spectrum", "polled_counter", "pushed_counter", "alarm_scalar",
              "State", "Status", "DOUBLE_SCALAR", "nope"]
COMMANDS = ["DevString", "DevVoid", "DevVarDoubleArray", "GetCounter", "State", "Status", "nope"]
PROPERTIES = ["mythical_property", "list_property", "unit", "my_attribute_property", "min_value",
              "nope"]
IOC_PREFIX = "cp:"  # the caproto_ioc fixture's
PVS = [IOC_PREFIX + n for n in (
    "double", "float", "long", "short", "char", "enum", "waveform", "int_waveform",
    "string_array", "nan", "alarm", "counter", "string", "string.VAL$", "nope",
)]
NAME_PARAMETERS = {"domain", "family", "member", "attr", "cmd", "prop", "pipe", "pv"}


def _load(name: str, **extra: Any) -> Any:
    document = yaml.safe_load((SWAGGER_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    config = schemathesis.Config.from_dict({**CONFIG, **extra})
    return schemathesis.openapi.from_dict(document, config=config).include(method="GET")


main = _load("main")
rc3 = _load("rc3")
# /sys/clean/{cache} only empties caches (rebuilt on demand): harmless to fuzz alongside the rest.
sys_ = _load("sys")
ops = _load("ops")
# EPICS answers 502/503/504 by design when an IOC errs, goes away or never answers (a gateway's
# statuses, documented per operation); 500 and every other 5xx are still bugs.
epics = _load("epics", checks={
    "not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", "502", "503", "504"]}
})
# GET /{sub_id}/event-stream answers a stream that lasts until the client hangs up: a fuzzed
# request would hold until the HTTP client's timeout and then fail, whatever the bridge does.
subscriptions = _load("subscriptions").exclude(operation_id="subscription_stream")
# The same for /live/stream; and /pvws/pv is a WebSocket (its plain GET answers 426).
pvws_pages = _load("pvws").exclude(operation_id="pvws_pv")

LONG_POLL = "/hosts/{host}/{port}/devices/{domain}/{family}/{member}/attributes/{attr}/{event}"
# The longest wait (ms) a fuzzed long poll may ask for.
SHORT_WAIT_MS = 200


def _base_url(bridge: Any, schema: Any) -> str:
    return bridge.base + schema.raw_schema["servers"][0]["url"].rstrip("/")


@pytest.fixture(scope="module")
def epics_fuzz_bridge(caproto_ioc, control_system) -> InProcessBridge:
    """EPICS on the demo IOC only; other names are refused (403) before any search, so random
    names cost no connect timeout."""
    config = Config(
        tango_host=control_system.tango_host,
        epics_ca_addr_list=(caproto_ioc.address,),
        # Short: "cp:nope" waits this long; a slow real PV answers a documented 504 all the same.
        epics_connect_timeout_ms=300,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        epics_allow=(re.escape(IOC_PREFIX) + ".*",),
    )
    running = InProcessBridge(config).start()
    yield running
    running.stop()


# -- checks --------------------------------------------------------------------------------------


@schemathesis.check
def every_error_is_a_failure_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Any status >= 400 answers the rc3 FAILURE body, unless the operation documents another
    body for that status (a health check's 503 is its report), which the schema check covers."""
    if response.status_code < 400 or not _documented_as_failure(case, response.status_code):
        return None
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    assert body.get("quality") == "FAILURE", f"error body without quality FAILURE: {body!r}"
    assert isinstance(body.get("timestamp"), int), body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert set(error) == {"reason", "description", "severity", "origin"}, error
    return True


def _documented_as_failure(case: Any, status: int) -> bool:
    raw = case.operation.schema.raw_schema
    responses = raw["paths"][case.operation.path]["get"]["responses"]
    if str(status) not in responses:
        return True  # undocumented statuses must still be FAILURE bodies
    schema = _resolve(responses[str(status)], raw)["content"]["application/json"]["schema"]
    return schema.get("$ref", "").endswith("/Failure")


def _is_failure(response: Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("quality") == "FAILURE" and "errors" in body


def _reason(response: Any) -> str | None:
    return response.json()["errors"][0]["reason"] if _is_failure(response) else None


@schemathesis.check
def invalid_requests_are_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's negative_data_rejection, except that a 200 FAILURE body counts as refusal.

    In the default rc3 mode a Tango failure answers 200 with the FAILURE body. When a request is
    invalid in several ways, the first failure found may be Tango's (e.g. ``?range=x`` on an
    unknown device answers its ``DB_DeviceNotDefined`` failure): the request is refused all the
    same.
    """
    if response.status_code == 200 and _is_failure(response):
        return None
    if not _negative(case, "path") and _sent_query_is_valid(case, response):
        # The invalid part never reached the server (e.g. a value that serializes to nothing):
        # what was sent is valid, so accepting it is right.
        return None
    return negative_data_rejection(ctx, response, case)


@schemathesis.check
def valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's positive_data_acceptance, with what OpenAPI cannot express.

    ``416`` is the documented answer to a valid ``range`` past the end of the collection, and
    ``range=a-b`` needs ``a < b`` (400 ``BadRange`` otherwise), which no pattern can say; nor
    can it say that ``value/image`` needs ``min <= max``, an image attribute, and a plot an
    array (400 ``BadParameter``, ``NotAnImage``, ``NotPlottable``).
    """
    if response.status_code == 416 and _reason(response) == "RangeNotSatisfiable":
        return None
    if response.status_code == 400 and _reason(response) == "BadName":
        # schemathesis occasionally labels as valid a name its generator did not draw from the
        # pattern (e.g. a character lost in encoding): judge the names actually sent.
        raw = case.operation.schema.raw_schema
        pattern = _resolve({"$ref": "#/components/schemas/" + (
            "PvName" if "PvName" in raw["components"]["schemas"] else "Name")}, raw)["pattern"]
        sent = _sent_path_parameters(case, response)
        names = [v for k, v in sent.items() if k in NAME_PARAMETERS]
        if not all(re.fullmatch(pattern.strip("^$"), v) for v in names):
            return None
    if response.status_code == 400 and _reason(response) in ("NotAnImage", "NotPlottable"):
        # Pictures: only an image attribute has a value/image, only an array a plot; the type of
        # the attribute or PV named is not in the request.
        return None
    if response.status_code == 400 and _reason(response) == "BadParameter" and _min_above_max(
            case, response):
        return None
    if response.status_code == 400 and _reason(response) == "BadRange":
        start, _, end = str((case.query or {}).get("range", "")).partition("-")
        if start.isdigit() and end.isdigit() and int(start) >= int(end):
            return None
    return positive_data_acceptance(ctx, response, case)


def _min_above_max(case: Any, response: Any) -> bool:
    sent = parse_qs(urlsplit(response.request.url).query)
    try:
        return float(sent["min"][0]) > float(sent["max"][0])
    except (KeyError, ValueError):
        return False


CHECKS = {
    "additional_checks": [
        every_error_is_a_failure_body, invalid_requests_are_refused, valid_requests_are_accepted
    ],
    "excluded_checks": [negative_data_rejection, positive_data_acceptance],
}
# A 405 from /tango/subscriptions/{sub_id} lacks its Allow header (RFC 9110), a bug of the route
# pinned below (test_405_on_a_subscription_names_the_allowed_methods, an expected failure until
# it is fixed). Only that check is left out of the subscriptions' fuzzing meanwhile.
SUBSCRIPTION_CHECKS = {
    **CHECKS, "excluded_checks": [*CHECKS["excluded_checks"], unsupported_method],
}


# -- what was sent ---------------------------------------------------------------------------------


def _negative(case: Any, location: str) -> bool:
    """Whether schemathesis made this part of the request invalid on purpose."""
    components = getattr(case.meta, "components", None) or {}
    return any(
        getattr(where, "value", where) == location and component.mode.is_negative
        for where, component in components.items()
    )


def _sent_path_parameters(case: Any, response: Any) -> dict[str, str]:
    """The path parameters as the server received them (decoded from the URL sent)."""
    template = re.escape(case.operation.path)
    template = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]*)", template)
    found = re.search(template + "/?$", urlsplit(response.request.url).path)
    return {k: unquote(v) for k, v in found.groupdict().items()} if found else {}


def _sent_query_is_valid(case: Any, response: Any) -> bool:
    """Whether the query string actually sent satisfies the operation's query parameters."""
    raw = case.operation.schema.raw_schema
    sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
    for parameter in _query_parameters(case):
        name, schema = parameter["name"], _resolve(parameter["schema"], raw)
        values = sent.get(name, [])
        if not values:
            if parameter.get("required"):
                return False
            continue
        if schema.get("type") != "array" and len(values) > 1:
            return False
        if schema.get("type") == "array":
            values = [v for v in values if v != ""]  # documented: empty values are ignored
            if not values and parameter.get("required"):
                return False
        for value in values:
            if value == "" and parameter.get("allowEmptyValue"):
                continue
            item = schema.get("items", schema) if schema.get("type") == "array" else schema
            if not _valid_scalar(value, item, raw):
                return False
    return True


def _valid_scalar(value: str, schema: dict[str, Any], raw: dict[str, Any]) -> bool:
    schema = _resolve(schema, raw)
    if schema.get("type") == "integer":
        if not (value.isascii() and value.isdigit()):
            return False
        return schema.get("minimum", -inf) <= int(value) <= schema.get("maximum", inf)
    if "enum" in schema and value not in schema["enum"]:
        return False
    pattern = schema.get("pattern")
    return pattern is None or re.fullmatch(pattern.strip("^$"), value) is not None


def _query_parameters(case: Any) -> list[dict[str, Any]]:
    raw = case.operation.schema.raw_schema
    path = raw["paths"][case.operation.path]
    declared = path.get("parameters", []) + path["get"].get("parameters", [])
    return [p for p in (_resolve(d, raw) for d in declared) if p["in"] == "query"]


def _resolve(node: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = raw
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


# -- aiming at real things -----------------------------------------------------------------------


def _chooser(case: Any) -> random.Random:
    """Choices derived from the generated case itself, so a failing case replays the same way."""
    return random.Random(repr(sorted((case.path_parameters or {}).items())) + repr(case.query))


def _aim_at_demo(case: Any, db_host: str, db_port: int) -> None:
    """Point about two thirds of the requests at the demo database and things it has.

    Only valid parts are replaced: a deliberately invalid path or query stays as generated.
    """
    params = case.path_parameters
    if not params or "host" not in params or _negative(case, "path"):
        return
    rnd = _chooser(case)
    if rnd.random() < 1 / 3:
        return  # keep the generated host, port and names
    params["host"], params["port"] = db_host, db_port
    if "domain" in params and rnd.random() < 0.75:
        params["domain"], params["family"], params["member"] = rnd.choice(DEVICES).split("/")
    for key, names in (("attr", ATTRIBUTES), ("cmd", COMMANDS), ("prop", PROPERTIES)):
        if key in params and rnd.random() < 0.75:
            params[key] = rnd.choice(names)
    if case.query and "attr" in case.query and not _negative(case, "query"):
        if rnd.random() < 0.75:
            case.query["attr"] = rnd.sample(ATTRIBUTES, rnd.randint(1, 4))


def _aim_at_ioc(case: Any) -> None:
    """Point about two thirds of the PV names at the demo IOC's PVs (valid parts only)."""
    rnd = _chooser(case)
    params = case.path_parameters
    if params and "pv" in params and not _negative(case, "path") and rnd.random() < 2 / 3:
        params["pv"] = rnd.choice(PVS)
    if case.query and "pv" in case.query and not _negative(case, "query"):
        if rnd.random() < 2 / 3:
            many = case.operation.path != "/pvs"
            case.query["pv"] = rnd.sample(PVS, rnd.randint(1, 4)) if many else rnd.choice(PVS)


def _accepted_timeout(value: Any) -> bool:
    """Whether the bridge takes this as a long poll's ``timeout`` (an integer from 0 to 10^9)."""
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= 10**9


def _keep_long_polls_short(case: Any) -> None:
    """Cut the wait of a long poll to at most SHORT_WAIT_MS.

    The bridge waits ``timeout`` ms (at most 30 s, and 30 s when there is none) for an event; an
    attribute that does not change would make each case wait that long. A timeout the bridge
    accepts is lowered, a missing or empty one set (the bridge ignores empty values); one it
    refuses stays as generated, so an invalid request stays invalid (and is answered at once).
    """
    if case.operation.path != LONG_POLL:
        return
    if case.query is None:
        case.query = {}
    raw = case.query.get("timeout")
    items = raw if isinstance(raw, list) else [raw]
    sent = [v for v in items if v is not None and str(v) != ""]
    if not sent:
        case.query["timeout"] = SHORT_WAIT_MS
    elif _accepted_timeout(sent[0]):
        shorter = [min(int(str(v)), SHORT_WAIT_MS) if _accepted_timeout(v) else v for v in items]
        case.query["timeout"] = shorter if isinstance(raw, list) else shorter[0]


def _aim_at_subscription(case: Any, bridge: Any, control_system: Any) -> None:
    """Point about two thirds of the subscription ids at a subscription that exists.

    Ids are random numbers, so generated ones name none (404). A fresh subscription per case,
    with one accepted target and two refused ones, has every part of the answer to check; it is
    removed for idleness after ``subscription_idle_s``.
    """
    params = case.path_parameters
    if not params or "sub_id" not in params or _negative(case, "path"):
        return
    if _chooser(case).random() < 1 / 3:
        return
    target = {"host": control_system.tango_host, "device": DEMO_DEVICE,
              "attribute": "double_scalar", "type": "change"}
    targets = [target, {**target, "attribute": "nope"}, {**target, "host": "elsewhere:10000"}]
    request = urllib.request.Request(
        f"{bridge.base}/tango/subscriptions", data=json.dumps(targets).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as created:
        params["sub_id"] = json.loads(created.read())["id"]


# -- the fuzzing ---------------------------------------------------------------------------------

FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))


@main.parametrize()
@FUZZ_SETTINGS
def test_main_operations_keep_their_contract(case, bridge):
    case.call_and_validate(base_url=_base_url(bridge, main), timeout=30, **CHECKS)


@sys_.parametrize()
@FUZZ_SETTINGS
def test_sys_operations_keep_their_contract(case, bridge):
    case.call_and_validate(base_url=_base_url(bridge, sys_), timeout=30, **CHECKS)


@ops.parametrize()
@FUZZ_SETTINGS
def test_ops_operations_keep_their_contract(case, bridge):
    case.call_and_validate(base_url=_base_url(bridge, ops), timeout=30, **CHECKS)


@rc3.parametrize()
@FUZZ_SETTINGS
def test_rc3_operations_keep_their_contract(case, bridge, control_system):
    _aim_at_demo(case, control_system.db_host, int(control_system.db_port))
    _keep_long_polls_short(case)
    case.call_and_validate(base_url=_base_url(bridge, rc3), timeout=30, **CHECKS)


@subscriptions.parametrize()
@FUZZ_SETTINGS
def test_subscriptions_operations_keep_their_contract(case, bridge, control_system):
    _aim_at_subscription(case, bridge, control_system)
    case.call_and_validate(base_url=_base_url(bridge, subscriptions), timeout=30,
                           **SUBSCRIPTION_CHECKS)


@epics.parametrize()
@FUZZ_SETTINGS
def test_epics_operations_keep_their_contract(case, epics_fuzz_bridge):
    _aim_at_ioc(case)
    case.call_and_validate(base_url=_base_url(epics_fuzz_bridge, epics), timeout=30, **CHECKS)


@pvws_pages.parametrize()
@FUZZ_SETTINGS
def test_pvws_pages_keep_their_contract(case, epics_fuzz_bridge):
    case.call_and_validate(base_url=_base_url(epics_fuzz_bridge, pvws_pages), timeout=30,
                           **CHECKS)


# -- what the fuzzing found, pinned ------------------------------------------------------------


def test_405_names_the_allowed_methods(bridge):
    reply = http("TRACE", f"{bridge.base}/tango/rest")
    assert reply.status == 405
    assert "GET" in reply.headers["allow"]
    assert reply.json()["quality"] == "FAILURE"


def test_405_on_a_subscription_names_the_allowed_methods(bridge):
    reply = http("TRACE", f"{bridge.base}/tango/subscriptions/1")
    assert reply.status == 405
    allowed = {m.strip() for m in reply.headers.get("allow", "").split(",")}
    assert {"GET", "PUT", "DELETE"} <= allowed


def test_filter_leaves_failures_whole(bridge, device_path):
    body = bridge.get(f"{device_path}/attributes/no_value/value?filter=name").json()
    assert body["quality"] == "FAILURE" and body["errors"]
    items = bridge.get(
        f"{device_path}/attributes/value?attr=double_scalar&attr=nope&filter=value"
    ).json()
    assert list(items[0]) == ["value"]
    assert items[1]["name"] == "nope" and items[1]["quality"] == "FAILURE" and items[1]["errors"]


@pytest.mark.parametrize("url, reason", [
    ("/properties/%E2%82%AC", "BadName"),  # PyTango: UnicodeEncodeError (500)
    ("/properties/%29q%C3%BF", "BadName"),  # PyTango: UnicodeDecodeError (500)
    ("/attributes/%C3%BF/value", "BadName"),
    ("/attributes/value?attr=double_scalar&attr=%C3%BF", "BadName"),
    ("/commands/Dev%0A", "BadName"),  # "$" let a final newline through
])
def test_names_beyond_printable_ascii_are_refused(bridge, device_path, url, reason):
    reply = bridge.get(device_path + url)
    assert reply.status == 400
    assert reply.json()["errors"][0]["reason"] == reason


def test_wildcard_beyond_printable_ascii_is_refused(bridge, host_path):
    reply = bridge.get(f"{host_path}/devices?wildcard=%E2%82%AC")  # was a 500
    assert reply.status == 400
    assert reply.json()["errors"][0]["reason"] == "BadParameter"


@pytest.mark.parametrize("url, reason", [
    ("/hosts/127.0.0.1/%C2%B2", "BadPort"),  # "²".isdigit(), int("²") raised: 500
    ("/hosts/127.0.0.1/%D9%A1%D9%A2", "BadPort"),  # Arabic-Indic digits
])
def test_ports_are_ascii_digits(bridge, url, reason):
    reply = bridge.get("/tango/rest/rc3" + url)
    assert reply.status == 400
    assert reply.json()["errors"][0]["reason"] == reason


@pytest.mark.parametrize("query, reason", [
    ("depth=%C2%B2", "BadParameter"),  # was a 500
    ("range=%D9%A1-%D9%A2", "BadRange"),
    ("range=0-1%0A", "BadRange"),
])
def test_numbers_in_queries_are_ascii_digits(bridge, device_path, query, reason):
    reply = bridge.get(f"{device_path}/attributes/double_scalar/history?{query}")
    assert reply.status == 400
    assert reply.json()["errors"][0]["reason"] == reason


def test_links_escape_the_names_they_carry(bridge, host_path):
    """A device named with "#" (valid for the bridge, unknown to Tango) still gets valid links."""
    body = bridge.get(f"{host_path}/devices/a%23b/c/d/state").json()
    assert body["state"] == "UNKNOWN"
    assert body["_links"]["_self"] == f"{bridge.base}{host_path}/devices/a%23b/c/d/state"
    assert "#" not in json.dumps(body["_links"])
