"""The settings table and its layers: defaults < file < environment < command line."""

from __future__ import annotations

import pytest

from device import settings
from device.errors import GlimpseError
from conftest import REPO, run_cli


def test_defaults_come_from_the_table():
    effective = settings.load({}, env={"GLIMPSE_CONFIG": str(REPO / "no-such.conf")})
    for row in settings.SETTINGS:
        assert effective.values[row.name] == row.default
        assert effective.sources[row.name] == "default"


def test_layers_override_in_order(tmp_path):
    conf = tmp_path / "glimpse.conf"
    conf.write_text("[glimpse]\nport = 9001\nthreads = 2\nlog_level = warning\n")
    env = {"GLIMPSE_PORT": "9002", "GLIMPSE_THREADS": "3"}
    effective = settings.load({"port": "9003", "host": None}, env=env, config_file=conf)
    assert effective.port == 9003 and effective.sources["port"] == "command line --port"
    assert effective.threads == 3 and effective.sources["threads"] == "environment GLIMPSE_THREADS"
    assert effective.log_level == "warning" and effective.sources["log_level"] == str(conf)
    assert effective.host == "127.0.0.1" and effective.sources["host"] == "default"


def test_config_file_without_section_header_and_from_env_path(tmp_path):
    conf = tmp_path / "plain.conf"
    conf.write_text("# comment\nverify = quick\n")
    effective = settings.load({}, env={"GLIMPSE_CONFIG": str(conf)})
    assert effective.verify == "quick"


@pytest.mark.parametrize("layer, expected", [
    ("file", "glimpse.conf: 'eighty' is not a valid int"),
    ("env", "from environment GLIMPSE_PORT: 'eighty' is not a valid int"),
    ("cli", "from command line --port: 'eighty' is not a valid int"),
])
def test_a_bad_value_names_key_and_source(tmp_path, layer, expected):
    conf = tmp_path / "glimpse.conf"
    conf.write_text("port = eighty\n" if layer == "file" else "")
    env = {"GLIMPSE_PORT": "eighty"} if layer == "env" else {}
    cli = {"port": "eighty"} if layer == "cli" else {}
    with pytest.raises(settings.SettingInvalid) as caught:
        settings.load(cli, env=env, config_file=conf)
    assert "setting port" in str(caught.value) and expected in str(caught.value)
    assert isinstance(caught.value, GlimpseError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("cli, message", [
    ({"port": "0"}, "below the minimum"),
    ({"port": "70000"}, "above the maximum"),
    ({"verify": "sometimes"}, "not one of full, quick"),
    ({"default_min_score": "2"}, "above the maximum"),
    ({"threads": "2.5"}, "not a valid int"),
])
def test_ranges_and_choices_are_enforced(cli, message):
    with pytest.raises(settings.SettingInvalid, match=message):
        settings.load(cli, env={"GLIMPSE_CONFIG": str(REPO / "no-such.conf")})


def test_unknown_keys_in_the_file_are_refused(tmp_path):
    conf = tmp_path / "glimpse.conf"
    conf.write_text("prot = 80\n")
    with pytest.raises(settings.SettingInvalid, match="unknown setting 'prot'"):
        settings.load({}, env={}, config_file=conf)
    conf.write_text("[server]\nport = 80\n")
    with pytest.raises(settings.SettingInvalid, match=r"unknown section \[server\]"):
        settings.load({}, env={}, config_file=conf)


def test_booleans_accept_the_usual_words():
    row = settings.Setting("flag", False, "bool", "a flag")
    assert [row.parse(v, "test") for v in ("yes", "On", "1", "false", "no", "0")] == [True, True, True, False, False, False]
    with pytest.raises(settings.SettingInvalid):
        row.parse("maybe", "test")


def test_bundle_dir_defaults_to_the_current_link():
    effective = settings.load({"data_dir": "/srv/glimpse"}, env={"GLIMPSE_CONFIG": str(REPO / "no-such.conf")})
    assert str(effective.bundle_dir()) == "/srv/glimpse/current"
    effective = settings.load({"bundle": "/tmp/b"}, env={"GLIMPSE_CONFIG": str(REPO / "no-such.conf")})
    assert str(effective.bundle_dir()) == "/tmp/b"


def test_the_configuration_doc_is_generated_from_the_table():
    assert (REPO / "docs" / "configuration.md").read_text() == settings.markdown(), \
        "docs/configuration.md is stale: run python -m device.settings > docs/configuration.md"


def test_every_setting_is_a_serve_flag_with_its_help():
    out = run_cli("device", "serve", "--help").stdout
    for row in settings.SETTINGS:
        assert row.flag in out and row.env in out


def test_glimpse_config_prints_values_and_sources(tmp_path):
    conf = tmp_path / "glimpse.conf"
    conf.write_text("threads = 2\nadmin_token_sha256 = " + "ab" * 32 + "\n")
    out = run_cli("device", "config", "--config", str(conf), "--port", "9100").stdout
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()}
    assert "9100" in lines["port"] and "# command line --port" in lines["port"]
    assert "2" in lines["threads"] and f"# {conf}" in lines["threads"]
    assert "# default" in lines["host"]
    assert "(set)" in lines["admin_token_sha256"] and "abab" not in out  # the hash is not shown


def test_bad_setting_stops_serve_naming_key_and_source(tmp_path):
    proc = run_cli("device", "serve", "--bundle", str(tmp_path), "--port", "eighty", check=False)
    assert proc.returncode == 2
    assert "glimpse: error: setting port from command line --port: 'eighty' is not a valid int" in proc.stderr


def test_a_config_file_named_on_the_command_line_must_exist(tmp_path):
    with pytest.raises(GlimpseError, match="no-such.conf: no such configuration file"):
        settings.load({}, env={}, config_file=tmp_path / "no-such.conf")
    proc = run_cli("device", "config", "--config", str(tmp_path / "no-such.conf"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"glimpse: error: {tmp_path / 'no-such.conf'}: no such configuration file"
