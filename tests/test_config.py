"""Config loading: precedence, validation messages, file handling, env parsing, shipped files, logging setup."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zmqgrid.config import MODES, Config, load_config, master_host_port
from zmqgrid.errors import EXIT_USAGE, ConfigError
from zmqgrid.logs import configure_logging

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The repo's own config/ must not leak into tests that expect "no default file".
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(tmp_path: Path, data: Any, name: str = "settings.json") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def error_of(**kwargs: Any) -> str:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


# --- precedence ---------------------------------------------------------------------------------------------

def test_defaults_apply_when_there_is_no_file_env_or_flag() -> None:
    config = load_config(env={})
    assert config.mode == "standalone"
    assert (config.port, config.pub_port, config.heartbeat_port) == (8000, 8001, 8002)
    assert config.master_url == "tcp://127.0.0.1:8000"
    assert config.concurrent_tasks == 3 and config.prefetch is None   # adaptive
    assert config.heartbeat_interval == 1.0 and config.device_timeout == 2.5
    assert config.device_id is None and config.device_name is None
    assert config.tags == []


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000, "concurrent_tasks": 7, "load_balance_strategy": "random"})
    config = load_config(config_path=path, env={})
    assert (config.port, config.concurrent_tasks, config.load_balance_strategy) == (9000, 7, "random")


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000, "concurrent_tasks": 7})
    config = load_config(config_path=path, env={"ZMQGRID_PORT": "9100"})
    assert config.port == 9100
    assert config.concurrent_tasks == 7


def test_flags_override_env_and_none_flags_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000, "concurrent_tasks": 7})
    config = load_config(config_path=path, env={"ZMQGRID_PORT": "9100", "ZMQGRID_CONCURRENT_TASKS": "8"},
                         flags={"port": 9200, "concurrent_tasks": None})
    assert config.port == 9200
    assert config.concurrent_tasks == 8


def test_mode_argument_picks_the_default_file_in_the_current_directory(empty_cwd: Path) -> None:
    write(empty_cwd, {"concurrent_tasks": 9}, "config/distribution_worker.json")
    write(empty_cwd, {"concurrent_tasks": 4}, "config/distribution_master.json")
    assert load_config("worker", env={}).concurrent_tasks == 9
    assert load_config("master", env={}).concurrent_tasks == 4


def test_missing_default_file_is_fine() -> None:
    assert load_config("master", env={}).mode == "master"


def test_no_mode_means_standalone_and_its_default_file(empty_cwd: Path) -> None:
    write(empty_cwd, {"workers": 5}, "config/distribution_standalone.json")
    config = load_config(env={})
    assert config.mode == "standalone"
    assert config.workers == 5


def test_mode_argument_beats_the_files_mode_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"mode": "worker"})
    assert load_config(config_path=path, env={}).mode == "worker"
    assert load_config("master", config_path=path, env={}).mode == "master"


def test_zmqgrid_master_is_an_alias_of_master_url_and_the_full_name_wins() -> None:
    assert load_config(env={"ZMQGRID_MASTER": "tcp://10.0.0.5:8000"}).master_url == "tcp://10.0.0.5:8000"
    both = {"ZMQGRID_MASTER": "tcp://10.0.0.5:8000", "ZMQGRID_MASTER_URL": "tcp://10.0.0.6:8000"}
    assert load_config(env=both).master_url == "tcp://10.0.0.6:8000"
    assert load_config(env=both, flags={"master_url": "10.0.0.7:9"}).master_url == "tcp://10.0.0.7:9"


def test_one_port_flag_moves_all_three_ports(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000})
    config = load_config(config_path=path, env={}, flags={"port": 9300})
    assert (config.port, config.pub_port, config.heartbeat_port) == (9300, 9301, 9302)
    assert config.master_url == "tcp://127.0.0.1:9300"
    assert (config.router_endpoint, config.pub_endpoint, config.heartbeat_endpoint) == (
        "tcp://127.0.0.1:9300", "tcp://127.0.0.1:9301", "tcp://127.0.0.1:9302")


def test_explicit_pub_and_heartbeat_ports_are_kept() -> None:
    config = load_config(env={"ZMQGRID_PUB_PORT": "7001", "ZMQGRID_HEARTBEAT_PORT": "7002"})
    assert (config.port, config.pub_port, config.heartbeat_port) == (8000, 7001, 7002)


def test_master_url_follows_host_and_port_when_not_set_and_wildcards_use_loopback() -> None:
    assert load_config(env={}, flags={"host": "10.1.2.3", "port": 9000}).master_url == "tcp://10.1.2.3:9000"
    assert load_config(env={}, flags={"host": "0.0.0.0"}).master_url == "tcp://127.0.0.1:8000"
    assert load_config(env={}, flags={"host": "::"}).master_url == "tcp://[::1]:8000"


def test_worker_device_id_defaults_to_a_valid_host_name_and_name_to_id() -> None:
    config = load_config("worker", env={})
    assert config.device_id and re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", config.device_id)
    assert config.device_name == config.device_id
    named = load_config("worker", env={}, flags={"device_id": "w-1", "device_name": "Worker Node 1"})
    assert (named.device_id, named.device_name) == ("w-1", "Worker Node 1")
    assert load_config("master", env={}).device_id is None


def test_empty_environment_variables_count_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000})
    assert load_config(config_path=path, env={"ZMQGRID_PORT": "", "ZMQGRID_TAGS": " "}).port == 9000


def test_unknown_environment_variables_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="zmqgrid"):
        assert load_config(env={"ZMQGRID_POTR": "1"}).port == 8000
    assert "ZMQGRID_POTR" in caplog.text


# --- environment parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("0", False), ("false", False), ("No", False)])
def test_env_booleans(text: str, expected: bool) -> None:
    assert load_config(env={"ZMQGRID_ENABLE_MONITORING": text}).enable_monitoring is expected


def test_env_numbers_and_lists_are_parsed() -> None:
    config = load_config(env={"ZMQGRID_PORT": " 9000 ", "ZMQGRID_TASK_TIMEOUT": "2.5", "ZMQGRID_WORKERS": "0",
                              "ZMQGRID_TAGS": "linux, gpu,,linux", "ZMQGRID_LOG_LEVEL": "debug"})
    assert (config.port, config.task_timeout, config.workers) == (9000, 2.5, 0)
    assert config.tags == ["linux", "gpu"]
    assert config.log_level == "DEBUG"


def test_flag_tags_accept_a_list_or_comma_text() -> None:
    assert load_config(env={}, flags={"tags": ["a", "b"]}).tags == ["a", "b"]
    assert load_config(env={}, flags={"tags": "a,b"}).tags == ["a", "b"]


# --- validation messages name source, key, value and what is allowed ------------------------------------------

TAGS_ALLOWED = 'at most 61 non-empty tags without commas or spaces, as ["linux", "gpu"]'
FILE_CASES = [
    ("port", "abc", '"abc"', "an integer 1-65535"),
    ("port", 0, "0", "an integer 1-65535"),
    ("port", 70000, "70000", "an integer 1-65535"),
    ("port", True, "true", "an integer 1-65535"),
    ("port", "8000", '"8000"', "an integer 1-65535"),
    ("pub_port", 0, "0", "an integer 1-65535, or null"),
    ("concurrent_tasks", 0, "0", "an integer 1-1024"),
    ("concurrent_tasks", 1025, "1025", "an integer 1-1024"),
    ("prefetch", -1, "-1", "an integer 0-1024"),
    ("workers", 65, "65", "an integer 0-64"),
    ("max_tasks_per_child", -1, "-1", "an integer 0-2147483647"),
    ("python_pool", "threads", "\"threads\"", "one of process, inline"),
    ("max_child_memory_mb", "1G", '"1G"', "an integer 0-1048576"),
    ("flood_output_mb_per_s", -1, "-1", "an integer 0-1048576"),
    ("max_retry_count", 1.5, "1.5", "an integer 0-100"),
    ("task_timeout", 0, "0", "a number of seconds greater than 0"),
    ("device_timeout", -5, "-5", "a number of seconds greater than 0"),
    ("heartbeat_interval", "fast", '"fast"', "a number of seconds greater than 0"),
    ("load_balance_strategy", "fastest", '"fastest"', "one of least_tasks, round_robin, weighted, random"),
    ("log_level", "LOUD", '"LOUD"', "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("mode", "boss", '"boss"', "one of master, worker, standalone"),
    ("enable_monitoring", "yes", '"yes"', "true or false"),
    ("tags", "linux", '"linux"', TAGS_ALLOWED),
    ("tags", ["a,b"], '["a,b"]', TAGS_ALLOWED),
    ("tags", ["two words"], '["two words"]', TAGS_ALLOWED),
    ("tags", [""], '[""]', TAGS_ALLOWED),
    ("tags", [f"t{i}" for i in range(63)], json.dumps([f"t{i}" for i in range(63)])[:199] + "…", TAGS_ALLOWED),
    ("weight", 1e7, "10000000.0", "a number greater than 0.000001 and at most 1,000,000"),
    ("weight", 0, "0", "a number greater than 0.000001 and at most 1,000,000"),
    ("device_id", "has space", '"has space"', "1-64 characters from A-Z a-z 0-9 _ . : -, or null"),
    ("device_id", "x" * 65, json.dumps("x" * 65), "1-64 characters"),
    ("host", "", '""', "a host name or IP address"),
    ("db_path", "", '""', "a non-empty string"),
    ("master_url", "ftp://h:1", '"ftp://h:1"', "tcp://HOST:PORT"),
]


@pytest.mark.parametrize("key, value, shown, allowed", FILE_CASES)
def test_bad_file_values_name_file_key_value_and_what_is_allowed(
        tmp_path: Path, key: str, value: Any, shown: str, allowed: str) -> None:
    path = write(tmp_path, {key: value})
    message = error_of(config_path=path)
    assert message.startswith(f"{path}: {key} = {shown} is not allowed; expected {allowed}")


def test_the_documented_example_message(empty_cwd: Path) -> None:
    write(empty_cwd, {"port": "abc"}, "config/distribution_master.json")
    assert error_of(mode="master") == (
        'config/distribution_master.json: port = "abc" is not allowed; expected an integer 1-65535')


@pytest.mark.parametrize("var, text, key, allowed", [
    ("ZMQGRID_PORT", "abc", "port", "an integer 1-65535"),
    ("ZMQGRID_PORT", "80.5", "port", "an integer 1-65535"),
    ("ZMQGRID_ENABLE_MONITORING", "maybe", "enable_monitoring", "true or false (or 1/0/yes/no)"),
    ("ZMQGRID_TASK_TIMEOUT", "soon", "task_timeout", "a number of seconds greater than 0"),
    ("ZMQGRID_DEVICE_TIMEOUT", "inf", "device_timeout", "a number of seconds greater than 0"),
    ("ZMQGRID_TAGS", "a b", "tags", 'or "linux,gpu"'),
    ("ZMQGRID_LOAD_BALANCE_STRATEGY", "best", "load_balance_strategy", "one of least_tasks"),
    ("ZMQGRID_MASTER", "nowhere", "master_url", "tcp://HOST:PORT"),
])
def test_bad_env_values_name_the_variable(var: str, text: str, key: str, allowed: str) -> None:
    message = error_of(env={var: text})
    assert message.startswith(f'environment {var}: {key} = "{text}" is not allowed; expected ')
    assert allowed in message


@pytest.mark.parametrize("key, value, flag, allowed", [
    ("concurrent_tasks", 0, "--concurrency", "an integer 1-1024"),
    ("master_url", "ftp://x:1", "--master", "tcp://HOST:PORT"),
    ("tags", ["a b"], "--tag", "without commas or spaces"),
    ("db_path", "", "--db", "a non-empty string"),
    ("device_id", "bad id", "--device-id", "1-64 characters"),
    ("port", "abc", "--port", "an integer 1-65535"),
    ("log_level", "verbose", "--log-level", "one of DEBUG"),
])
def test_bad_flag_values_name_the_flag(key: str, value: Any, flag: str, allowed: str) -> None:
    message = error_of(flags={key: value})
    assert message.startswith(f"{flag}: {key} = {json.dumps(value)} is not allowed; expected ")
    assert allowed in message


def test_bad_mode_argument_names_the_mode_flag() -> None:
    assert error_of(mode="boss").startswith('--mode: mode = "boss" is not allowed; expected one of master')


@pytest.mark.parametrize("key, value, replaced_by", [
    ("api_key", "s3cret-key-in-an-old-file", "workers and clients authenticate with CURVE keys"),
    ("dispatch_interval", 10, "dispatch is event-driven"),
])
def test_keys_that_no_setting_reads_are_refused_with_what_to_do_and_never_their_value(
        tmp_path: Path, key: str, value: Any, replaced_by: str) -> None:
    path = write(tmp_path, {"port": 9000, key: value})
    message = error_of(config_path=path)
    assert message.startswith(f'{path}: key "{key}" does nothing; remove it ({replaced_by}')
    assert str(value) not in message.replace(str(path), "")   # (a path such as .../pytest-610/... may hold it)
    env_var = "ZMQGRID_" + key.upper()
    assert error_of(env={env_var: str(value)}).startswith(f'environment {env_var}: key "{key}" does nothing; remove it')
    assert error_of(flags={key: value}).startswith(f'flags: key "{key}" does nothing; remove it')
    assert load_config(env={env_var: "  "}).port == 8000   # empty counts as unset, as for every variable


def test_the_three_ports_must_differ_and_the_stronger_source_is_blamed(tmp_path: Path) -> None:
    assert error_of(flags={"pub_port": 8000}).startswith(
        "--pub-port: pub_port = 8000 is not allowed; expected a port different from port (8000, from default)")
    path = write(tmp_path, {"heartbeat_port": 8001})
    message = error_of(config_path=path)
    assert message.startswith(f"{path}: heartbeat_port = 8001 is not allowed; expected a port different from "
                              "pub_port (8001, from default (port + 1))")
    assert "must all differ" in message


def test_a_port_whose_derived_ports_overflow_is_rejected() -> None:
    message = error_of(env={"ZMQGRID_PORT": "65535"})
    assert message.startswith("environment ZMQGRID_PORT: port = 65535 is not allowed; expected at most 65534")
    assert load_config(env={"ZMQGRID_PORT": "65535", "ZMQGRID_PUB_PORT": "9001",
                            "ZMQGRID_HEARTBEAT_PORT": "9002"}).port == 65535


def test_device_timeout_must_exceed_heartbeat_interval(tmp_path: Path) -> None:
    message = error_of(flags={"device_timeout": 1})
    assert message.startswith("--device-timeout: device_timeout = 1.0 is not allowed; "
                              "expected more than heartbeat_interval (1.0, from default)")
    assert "device_timeout must be greater than heartbeat_interval" in message
    path = write(tmp_path, {"device_timeout": 10})
    message = error_of(config_path=path, env={"ZMQGRID_HEARTBEAT_INTERVAL": "20"})
    assert message.startswith("environment ZMQGRID_HEARTBEAT_INTERVAL: heartbeat_interval = 20.0 is not allowed; "
                              f"expected less than device_timeout (10.0, from {path})")


# --- files --------------------------------------------------------------------------------------------------

def test_unknown_file_key_suggests_the_close_match(tmp_path: Path) -> None:
    path = write(tmp_path, {"prot": 9000})
    assert error_of(config_path=path) == f'{path}: unknown key "prot"; did you mean "port"?'
    path = write(tmp_path, {"concurent_task": 2})
    assert 'did you mean "concurrent_tasks"?' in error_of(config_path=path)


def test_unknown_file_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    message = error_of(config_path=write(tmp_path, {"zzzzzz": 1}))
    assert 'unknown key "zzzzzz"; allowed keys: mode, host, port' in message


def test_unknown_flag_key_is_an_error() -> None:
    assert 'unknown key "colour"' in error_of(flags={"colour": "red"})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert error_of(config_path=path).startswith(f"{path}: config file not found")


def test_unreadable_explicit_file_is_an_error(tmp_path: Path) -> None:
    assert error_of(config_path=tmp_path).startswith(f"{tmp_path}: cannot read config file")


def test_non_json_file_is_an_error_with_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "port": 9000,\n}')
    message = error_of(config_path=path)
    assert message.startswith(f"{path}: not valid JSON (")
    assert "line 3" in message


def test_a_broken_default_file_is_an_error_too(empty_cwd: Path) -> None:
    write(empty_cwd, "port = 9000", "config/distribution_worker.json")
    assert error_of(mode="worker").startswith("config/distribution_worker.json: not valid JSON")


def test_file_must_hold_a_json_object(tmp_path: Path) -> None:
    assert "expected a JSON object of settings, got an array" in error_of(config_path=write(tmp_path, "[1, 2]"))


@pytest.mark.parametrize("depth", [990, 100_000])
def test_a_file_nested_too_deeply_to_read_is_one_line_of_error(tmp_path: Path, depth: int) -> None:
    path = write(tmp_path, '{"tags": ' + "[" * depth + "]" * depth + "}")
    assert error_of(config_path=path).startswith(f"{path}: nested too deeply to read; a config file is one JSON object")


def test_a_deeply_nested_value_is_told_in_a_short_line(tmp_path: Path) -> None:
    message = error_of(config_path=write(tmp_path, {"tags": json.loads("[" * 500 + "]" * 500)}))
    assert message.startswith(f"{tmp_path / 'settings.json'}: tags = [[[")
    assert "…" in message and len(message) < 400


def test_the_cli_given_a_deeply_nested_config_says_so_in_one_line_and_exits_3(tmp_path: Path) -> None:
    path = write(tmp_path, "[" * 100_000 + "]" * 100_000)
    done = subprocess.run([sys.executable, "-m", "zmqgrid", "tasks", "list", "--config", str(path)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.splitlines() == [f"error: {path}: nested too deeply to read; a config file is one JSON object "
                                        "of plain settings (numbers, strings, true/false, lists of strings)"]


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"port": 9000, "port": 9100}')
    assert error_of(config_path=path) == f'{path}: key "port" appears more than once; keep one of them'


def test_utf8_file_with_byte_order_mark_and_chinese_name_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"device_name": "工作节点 1"}, ensure_ascii=False).encode())
    assert load_config(config_path=path, env={}).device_name == "工作节点 1"


def test_the_seed_guides_keys_and_values_are_accepted_but_the_two_that_do_nothing(tmp_path: Path) -> None:
    seed = {"mode": "worker", "device_id": "worker-001", "device_name": "Worker Node 1", "host": "0.0.0.0",
            "port": 8000, "master_url": "http://192.168.1.10:8000", "concurrent_tasks": 5, "task_timeout": 3600,
            "max_retry_count": 3, "load_balance_strategy": "least_tasks",
            "heartbeat_interval": 30, "timeout_check_interval": 60, "device_timeout": 300,
            "enable_monitoring": True}
    config = load_config(config_path=write(tmp_path, seed), env={})
    assert config.master_url == "tcp://192.168.1.10:8000"
    assert (config.heartbeat_interval, config.device_timeout) == (30.0, 300.0)
    for retired in ({"dispatch_interval": 10}, {"api_key": "your-secure-api-key-here"}):
        message = error_of(config_path=write(tmp_path, {**seed, **retired}))
        assert f'key "{next(iter(retired))}" does nothing; remove it' in message and "your-secure" not in message


def test_every_field_round_trips_through_a_file(tmp_path: Path) -> None:
    original = load_config(env={}, flags={"tags": ["linux"], "device_id": "w1"})
    data = dataclasses.asdict(original)
    loaded = load_config(config_path=write(tmp_path, data), env={})
    assert loaded == original


# --- shipped files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_shipped_config_files_load_cleanly(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = load_config(mode, config_path=REPO / "config" / f"distribution_{mode}.json", env={})
    monkeypatch.chdir(REPO)
    assert load_config(mode, env={}) == explicit
    assert explicit.mode == mode
    assert explicit.device_timeout > explicit.heartbeat_interval


def test_shipped_files_keep_their_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    master = load_config("master", env={})
    assert (master.host, master.port, master.log_file, master.load_balance_strategy) == (
        "127.0.0.1", 8000, "logs/master.log", "least_tasks")
    worker = load_config("worker", env={})
    assert (worker.master_url, worker.concurrent_tasks, worker.prefetch, worker.log_file) == (
        "tcp://127.0.0.1:8000", 3, None, "logs/worker.log")   # prefetch adaptive
    standalone = load_config("standalone", env={})
    assert (standalone.workers, standalone.db_path) == (2, "data/zmqgrid.db")


def test_shipped_master_file_lets_one_port_flag_move_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for mode in ("master", "standalone"):
        config = load_config(mode, env={}, flags={"port": 9100})
        assert (config.pub_port, config.heartbeat_port, config.master_url) == (9101, 9102, "tcp://127.0.0.1:9100")


# --- master URLs and endpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, normalised", [
    ("tcp://10.0.0.1:8000", "tcp://10.0.0.1:8000"),
    ("http://10.0.0.1:8000", "tcp://10.0.0.1:8000"),
    ("https://master.example.com:8443/", "tcp://master.example.com:8443"),
    ("TCP://Host:1", "tcp://Host:1"),
    ("localhost:9000", "tcp://localhost:9000"),
    ("[::1]:9000", "tcp://[::1]:9000"),
])
def test_master_url_is_normalised_to_tcp(url: str, normalised: str) -> None:
    assert load_config(env={}, flags={"master_url": url}).master_url == normalised


@pytest.mark.parametrize("url", ["localhost", "h:0", "h:70000", "ftp://h:1", "http://h:1/api", "tcp://:1", ""])
def test_bad_master_urls_are_rejected(url: str) -> None:
    with pytest.raises(ConfigError, match="expected tcp://HOST:PORT"):
        master_host_port(url)


def test_master_host_port_splits_every_accepted_form() -> None:
    assert master_host_port("tcp://10.0.0.1:8000") == ("10.0.0.1", 8000)
    assert master_host_port("http://h:81/") == ("h", 81)
    assert master_host_port("h:82") == ("h", 82)
    assert master_host_port("tcp://[::1]:83") == ("::1", 83)


def test_endpoints_bracket_ipv6_and_fall_back_to_port_offsets() -> None:
    assert Config(host="::1", port=9000).pub_endpoint == "tcp://[::1]:9001"
    assert Config(port=9000).heartbeat_endpoint == "tcp://127.0.0.1:9002"
    assert Config(host="*").router_endpoint == "tcp://*:8000"


def test_to_dict_is_json_with_every_setting() -> None:
    data = load_config(env={}, flags={"tags": ["linux"]}).to_dict()
    assert json.loads(json.dumps(data)) == data and data["tags"] == ["linux"] and set(data) == {
        f.name for f in dataclasses.fields(Config)}


# --- logging ------------------------------------------------------------------------------------------------

@pytest.fixture
def log_name() -> Any:
    name = "zmqgrid.test_logs"
    yield name
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_configure_logging_writes_a_rotating_file_in_a_new_directory(tmp_path: Path, log_name: str) -> None:
    log_file = tmp_path / "deep" / "dir" / "zmqgrid.log"
    configure_logging("DEBUG", str(log_file), stream=False, name=log_name)
    logging.getLogger(log_name).debug("hello key=%s", 1)
    for handler in logging.getLogger(log_name).handlers:
        handler.flush()
    assert re.search(r"DEBUG zmqgrid\.test_logs: hello key=1", log_file.read_text(encoding="utf-8"))


def test_configure_logging_twice_does_not_duplicate_handlers_or_touch_root(tmp_path: Path, log_name: str) -> None:
    root_handlers = list(logging.getLogger().handlers)
    configure_logging("INFO", str(tmp_path / "a.log"), name=log_name)
    configure_logging("WARNING", str(tmp_path / "a.log"), name=log_name)
    logger = logging.getLogger(log_name)
    assert sorted(type(h).__name__ for h in logger.handlers) == ["PrivateRotatingFileHandler", "StreamHandler"]
    assert logger.level == logging.WARNING
    assert logging.getLogger().handlers == root_handlers


def test_a_terminal_level_keeps_info_in_the_file_and_shows_warnings_in_both(tmp_path: Path, log_name: str,
                                                                             capsys: pytest.CaptureFixture) -> None:
    # the demo's daemons: their INFO lines must not break up its table, their warnings must still be seen
    log_file = tmp_path / "demo.log"
    configure_logging("INFO", str(log_file), terminal_level="WARNING", name=log_name)
    logger = logging.getLogger(log_name)
    logger.info("registered device=w1")
    logger.warning("worker pid=1 did not stop")
    for handler in logger.handlers:
        handler.flush()
    terminal = capsys.readouterr().err
    assert "did not stop" in terminal and "registered" not in terminal
    written = log_file.read_text(encoding="utf-8")
    assert "INFO" in written and "registered device=w1" in written and "did not stop" in written


def test_configure_logging_rejects_a_bad_level(log_name: str) -> None:
    with pytest.raises(ConfigError, match="log_level"):
        configure_logging("LOUD", None, name=log_name)


def test_prefetch_is_adaptive_unless_a_number_is_set_and_auto_says_adaptive_in_every_source(tmp_path: Path) -> None:
    # Given a config file that fixes it, and one that leaves it adaptive
    fixed, auto = tmp_path / "fixed.json", tmp_path / "auto.json"
    fixed.write_text(json.dumps({"prefetch": 4}))
    auto.write_text(json.dumps({"prefetch": "auto"}))
    # Then a number fixes it, null and "auto" make it adaptive, and the environment overrides the file either way
    assert load_config("worker", config_path=fixed, env={}).prefetch == 4
    assert load_config("worker", config_path=auto, env={}).prefetch is None
    assert load_config("worker", config_path=fixed, env={"ZMQGRID_PREFETCH": "Auto"}).prefetch is None
    assert load_config("worker", config_path=auto, env={"ZMQGRID_PREFETCH": "0"}).prefetch == 0
    assert load_config("worker", config_path=fixed, flags={"prefetch": "auto"}, env={}).prefetch is None
    # And anything else is refused with what is allowed
    assert 'expected an integer 0-1024, or null or "auto"' in error_of(env={"ZMQGRID_PREFETCH": "lots"})
