"""Configuration layers: conf.py < YAML < environment < flags, validated once."""

from __future__ import annotations

import pytest

from mtango.config import Config, ConfigError, load_config, normalize_tango_host


def test_defaults_come_from_conf_py() -> None:
    import conf

    config = load_config(env={})
    assert config.app_base == conf.app_base == "/tango/rest"
    assert config.port == conf.port
    assert config.tango_host == ""
    assert config.allowed_tango_hosts == frozenset()


def test_layers_override_in_order(tmp_path) -> None:
    yaml_file = tmp_path / "bridge.yaml"
    yaml_file.write_text("port: 9001\nworkers: 3\nerror_status: rc4\ncors_origins: [http://a.example]\n")
    env = {"MTANGO_PORT": "9002", "TANGO_HOST": "db.example:10000", "MTANGO_WORKERS": "5"}
    config = load_config(str(yaml_file), env=env, overrides={"port": 9003})
    assert config.port == 9003  # flag beats environment beats YAML
    assert config.workers == 5  # environment beats YAML
    assert config.error_status == "rc4"  # YAML beats conf.py
    assert config.cors_origins == ("http://a.example",)
    assert config.tango_host == "db.example:10000"


def test_allow_list_defaults_to_tango_host_and_normalizes() -> None:
    config = load_config(env={"TANGO_HOST": "DB.Example:10000"})
    assert config.allowed_tango_hosts == frozenset({"db.example:10000"})
    config = load_config(env={"TANGO_HOST": "a:1", "MTANGO_TANGO_HOSTS": "a:1, b:2"})
    assert config.allowed_tango_hosts == frozenset({"a:1", "b:2"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MTANGO_PORT": "eighty"}, "port"),
        ({"MTANGO_ERROR_STATUS": "rc9"}, "error_status"),
        ({"MTANGO_WORKERS": "0"}, "workers"),
        ({"TANGO_HOST": "nohost:"}, "host:port"),
        ({"MTANGO_APP_BASE": "tango/rest/"}, "app_base"),
        ({"MTANGO_DEBUG": "maybe"}, "debug"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_unknown_yaml_key_is_an_error(tmp_path) -> None:
    yaml_file = tmp_path / "bridge.yaml"
    yaml_file.write_text("prot: 8000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(str(yaml_file), env={})


def test_normalize_tango_host() -> None:
    assert normalize_tango_host("Host") == "host:10000"
    assert normalize_tango_host(" h:20000 ") == "h:20000"
    with pytest.raises(ConfigError):
        normalize_tango_host("h:70000")


def test_config_is_picklable_for_spawned_workers() -> None:
    import pickle

    config = Config(tango_host="a:1", tango_hosts=("a:1", "b:2"))
    assert pickle.loads(pickle.dumps(config)) == config


def test_tango_host_with_fail_over_hosts_is_one_database() -> None:
    config = load_config(env={"TANGO_HOST": "H1:10000,h2", "MTANGO_TANGO_HOSTS": "h2:10000 c:3"})
    assert config.failover_tango_hosts == ("h1:10000", "h2:10000")
    assert config.served_tango_host == "h1:10000"
    # Either spelling of the fail-over database is the one database, under its first host.
    assert config.effective_tango_hosts == ("h1:10000", "c:3")
    assert config.as_dict()["tango_hosts"] == ["h1:10000", "c:3"]
    for bad in ("a:1,a:1", "a:1,", "a:1,b:x"):
        with pytest.raises(ConfigError, match="TANGO_HOST|host"):
            load_config(env={"TANGO_HOST": bad})
    with pytest.raises(ConfigError, match="host:port"):
        normalize_tango_host("a:1,b:2")  # one host only; lists are TANGO_HOST's business
