"""EPICS settings (conf.py < YAML < EPICS_CA_* and MTANGO_* < flags), PV-name rules and the pure
conversion helpers."""

from __future__ import annotations

import asyncio

import pytest
from caproto import AccessRights

from main import build_parser, config_from_args
from mtango.config import Config, ConfigError, load_config
from mtango.epics import convert
from mtango.epics.names import NameRules, check_pv_name
from mtango.errors import ApiError


def test_defaults_send_no_channel_access():
    config = load_config(env={})
    assert config.epics_ca_addr_list == ()
    assert config.epics_ca_auto_addr_list is False
    assert config.epics_configured is False
    assert config.epics_allow == (".*",) and config.epics_deny == ()


def test_standard_epics_variables_are_read():
    config = load_config(
        env={
            "EPICS_CA_ADDR_LIST": "10.0.0.1 ioc.example:5070",
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_SERVER_PORT": "5080",
            "EPICS_CA_MAX_ARRAY_BYTES": "100000",
        }
    )
    assert config.epics_configured
    assert config.epics_addresses == (("10.0.0.1", 5080), ("ioc.example", 5070))
    assert config.epics_ca_max_array_bytes == 100000
    assert load_config(env={"EPICS_CA_AUTO_ADDR_LIST": "YES"}).epics_configured


def test_layers_for_epics_settings(tmp_path):
    yaml_file = tmp_path / "bridge.yaml"
    yaml_file.write_text(
        "epics_ca_addr_list: [127.0.0.1:1]\nepics_max_age_ms: 5\n"
        "epics_deny: ['.*:secret', 'a{1,3}']\n"
    )
    env = {"EPICS_CA_ADDR_LIST": "127.0.0.1:2", "MTANGO_EPICS_MAX_AGE_MS": "7"}
    config = load_config(str(yaml_file), env=env)
    assert config.epics_ca_addr_list == ("127.0.0.1:2",)  # environment beats YAML
    assert config.epics_max_age_ms == 7
    assert config.epics_deny == (".*:secret", "a{1,3}")  # YAML keeps regexes whole
    env["MTANGO_EPICS_CA_ADDR_LIST"] = "127.0.0.1:3"  # MTANGO_ beats the EPICS name
    assert load_config(env=env).epics_ca_addr_list == ("127.0.0.1:3",)
    args = build_parser().parse_args(["--epics-ca-addr-list", "127.0.0.1:4,127.0.0.1:5"])
    assert config_from_args(args).epics_ca_addr_list == ("127.0.0.1:4", "127.0.0.1:5")


@pytest.mark.parametrize(
    "env",
    [
        {"EPICS_CA_ADDR_LIST": "host:0"},
        {"EPICS_CA_ADDR_LIST": "host:port"},
        {"EPICS_CA_SERVER_PORT": "70000"},
        {"EPICS_CA_MAX_ARRAY_BYTES": "10"},
        {"MTANGO_EPICS_CONNECT_TIMEOUT_MS": "0"},
        {"MTANGO_EPICS_SEARCH_RETRY_MS": "0"},
        {"MTANGO_EPICS_IDLE_TIMEOUT": "-1"},
        {"MTANGO_EPICS_DENY": "a("},
        {"EPICS_CA_AUTO_ADDR_LIST": "maybe"},
    ],
)
def test_bad_epics_settings_stop_the_program(env):
    with pytest.raises(ConfigError):
        load_config(env=env)


def test_the_search_retry_setting_reaches_caproto():
    """caproto takes its first search retry interval from a module constant: the worker's
    client sets it from ``epics_search_retry_ms`` (caproto's own default is 30 ms)."""
    import caproto.client.common as ca_common

    from mtango.epics.backend import EpicsBackend

    async def started_with(ms: int) -> float:
        config = Config(epics_ca_addr_list=("127.0.0.1:1",), epics_search_retry_ms=ms)
        backend = EpicsBackend(config)
        backend.start()
        try:
            return ca_common.MIN_RETRY_SEARCHES_INTERVAL
        finally:
            await backend.close()

    saved = ca_common.MIN_RETRY_SEARCHES_INTERVAL
    try:
        assert asyncio.run(started_with(400)) == 0.4
        assert asyncio.run(started_with(load_config(env={}).epics_search_retry_ms)) == 0.25
    finally:
        ca_common.MIN_RETRY_SEARCHES_INTERVAL = saved


@pytest.mark.parametrize(
    "name",
    ["SR:C01:BPM1:X", "rec.VAL$", "wf.[1:3]", 'wf.{"arr":{"s":1}}', "a-b_c", "x" * 255],
)
def test_valid_pv_names(name):
    assert check_pv_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 256, "caf\u00e9", "tab\there"])
def test_invalid_pv_names(name):
    with pytest.raises(ApiError) as raised:
        check_pv_name(name)
    assert raised.value.status == 400


def test_allow_and_deny_rules():
    rules = NameRules([r"BL1:.*", r"SR:.*"], [r".*:secret", r"SR:C0[2-3]:.*"])
    assert rules.allowed("BL1:x")
    assert not rules.allowed("BL2:x")  # no allow pattern
    assert not rules.allowed("BL1:secret")  # deny wins
    assert rules.allowed("SR:C01:a") and not rules.allowed("SR:C02:a")
    assert not rules.allowed("xBL1:x")  # whole-name matches only
    everything = NameRules(Config().epics_allow, Config().epics_deny)
    assert everything.allowed("anything:at:all")


def test_alarm_and_access_mapping():
    class Meta:
        severity, status = 1, 4

    assert convert.alarm_fields(Meta) == {
        "severity": "MINOR", "status": "HIGH", "quality": "ATTR_WARNING"
    }
    Meta.severity, Meta.status = 3, 99
    assert convert.alarm_fields(Meta) == {
        "severity": "INVALID", "status": "99", "quality": "ATTR_INVALID"
    }
    assert convert.access_name(AccessRights.READ | AccessRights.WRITE) == "READ_WRITE"
    assert convert.access_name(AccessRights.READ) == "READ"
    assert convert.access_name(AccessRights.NO_ACCESS) == "NO_ACCESS"


def test_text_decoding():
    assert convert.decode_text(b"abc\0junk") == "abc"
    assert convert.decode_text("µm".encode()) == "µm"
    assert convert.decode_text(b"\xb5m") == "µm"  # Latin-1 when it is not UTF-8
