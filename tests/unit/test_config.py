"""Settings from the environment: defaults, every variable's bad values, precedence."""

from __future__ import annotations

import os
import pickle

import pytest

from akto_collector.config import (
    KNOWN_VARIABLES,
    MAX_WORKERS,
    ConfigError,
    Settings,
    default_daemonset_id,
    unknown_variables,
)
from akto_collector.filters import DiscoveryRule, PairFilter

SEED_RULES = (
    '[{"key":{"eq":"x-forwarded-client-cert","ifAbsent":"reject"},"value":{"regex":".*bookinfo.*"}}]'
)
# The env block of the seed DaemonSet guide, values as Kubernetes passes them
# (the unquoted `value: 5` arrives as the string "5").
SEED_ENV = {
    "AKTO_MODULE_DISCOVERY_CONFIG": SEED_RULES,
    "TRAFFIC_INACTIVITY_THRESHOLD": "30",
    "TRAFFIC_MAX_ACTIVE_CONN": "4096",
    "TRAFFIC_DISABLE_EGRESS": "false",
    "AKTO_MEM_THRESH_RESTART": "800",
    "TRAFFIC_BUFFER_THRESHOLD": "600",
    "AKTO_IGNORE_IP_TRAFFIC": "false",
    "AKTO_IGNORE_CLOUD_METADATA_CALLS": "false",
    "KAFKA_POLL_INTERVAL": "0.5",
    "UPROBE_POLL_INTERVAL": "5",
    "CAPTURE_ALL": "false",
    "CAPTURE_SSL": "true",
    "AKTO_NLB_IP": "10.0.0.12",
    "AKTO_MONGO_CONN": "mongodb://user:secret@mongo:27017/admini",
}


def load(env=None, **kwargs) -> Settings:
    kwargs.setdefault("machine_id_paths", ())
    kwargs.setdefault("hostname", "test-host")
    kwargs.setdefault("cpu_count", 4)
    return Settings.from_env(env or {}, **kwargs)


def error_of(env, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(env, **kwargs)
    return str(info.value)


# --- defaults --------------------------------------------------------------


def test_defaults():
    s = load({})
    assert s.discovery_rules == ()
    assert s.inactivity_threshold == 30.0
    assert s.max_active_conn == 4096
    assert s.disable_egress is False
    assert s.mem_thresh_restart_mb == 800
    assert s.buffer_threshold_mb == 600
    assert s.buffer_threshold_bytes == 600 * 1024 * 1024
    assert s.mem_thresh_restart_bytes == 800 * 1024 * 1024
    assert s.ignore_ip_traffic is False
    assert s.ignore_cloud_metadata is False
    assert s.kafka_poll_interval == 0.5
    assert s.uprobe_poll_interval == 300.0
    assert s.capture_all is True
    assert s.capture_ssl is True
    assert s.probe_all_pid is True
    assert s.kafka_brokers == ()
    assert s.kafka_topic == "akto.api.logs"
    assert s.kafka_compression == "lz4"
    assert (s.kafka_username, s.kafka_password, s.kafka_use_tls, s.kafka_ca_file) == ("", "", False, "")
    assert s.heartbeat_topic == "akto.daemonset.producer.heartbeats"
    assert s.heartbeat_interval == 60.0
    assert s.mongo_conn == ""
    assert s.workers == 4
    assert s.max_body_bytes == 1048576
    assert s.account_id == "1000000"
    assert s.vxlan_id == "0"
    assert len(s.daemonset_id) == 16 and int(s.daemonset_id, 16) >= 0
    assert s.node_name == "test-host"
    assert s.pod_name == ""
    assert s.log_level == "info"
    assert s.stats_interval == 10.0
    assert s.warnings() == []


def test_constructor_defaults_match_from_env():
    built, read = Settings(node_name="n", workers=2), load({"NODE_NAME": "n", "AKTO_WORKERS": "2"})
    assert built.describe() | {"daemonset_id": ""} == read.describe() | {"daemonset_id": ""}


def test_seed_guide_env_is_accepted_as_written():
    s = load(SEED_ENV)
    assert len(s.discovery_rules) == 1 and isinstance(s.discovery_rules[0], DiscoveryRule)
    assert s.uprobe_poll_interval == 300.0
    assert s.capture_all is False and s.capture_ssl is True
    assert s.kafka_brokers == ("10.0.0.12:9092",)
    assert s.mongo_conn.startswith("mongodb://")


def test_empty_and_blank_values_mean_default():
    s = load({"TRAFFIC_MAX_ACTIVE_CONN": "", "CAPTURE_SSL": "  ", "AKTO_LOG_LEVEL": ""})
    assert (s.max_active_conn, s.capture_ssl, s.log_level) == (4096, True, "info")


def test_surrounding_whitespace_is_ignored():
    s = load({"TRAFFIC_MAX_ACTIVE_CONN": " 100\n", "CAPTURE_ALL": " No "})
    assert (s.max_active_conn, s.capture_all) == (100, False)


def test_workers_default_is_capped():
    assert load({}, cpu_count=256).workers == MAX_WORKERS
    assert load({}, cpu_count=0).workers == 1


def test_settings_pickle_for_the_workers():
    s = load(SEED_ENV)
    assert pickle.loads(pickle.dumps(s)) == s


def test_settings_are_frozen():
    s = load({})
    with pytest.raises(AttributeError):
        s.max_active_conn = 1  # type: ignore[misc]


# --- values ----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["true", "TRUE", "1", "yes", "Yes", "on", "ON"])
def test_booleans_true(raw):
    assert load({"TRAFFIC_DISABLE_EGRESS": raw}).disable_egress is True


@pytest.mark.parametrize("raw", ["false", "False", "0", "no", "NO", "off", "Off"])
def test_booleans_false(raw):
    assert load({"CAPTURE_SSL": raw}).capture_ssl is False


def test_numbers():
    s = load(
        {
            "TRAFFIC_INACTIVITY_THRESHOLD": "2.5",
            "KAFKA_POLL_INTERVAL": ".1",
            "UPROBE_POLL_INTERVAL": "0.5",
            "AKTO_HEARTBEAT_INTERVAL": "1e1",
            "AKTO_MAX_BODY_BYTES": "0",
            "AKTO_WORKERS": "+3",
        }
    )
    assert s.inactivity_threshold == 2.5
    assert s.kafka_poll_interval == 0.1
    assert s.uprobe_poll_interval == 30.0
    assert s.heartbeat_interval == 10.0
    assert s.max_body_bytes == 0
    assert s.workers == 3


def test_choices_are_case_insensitive_and_normalised():
    s = load({"AKTO_KAFKA_COMPRESSION": "ZSTD", "AKTO_LOG_LEVEL": "Warn"})
    assert (s.kafka_compression, s.log_level) == ("zstd", "warning")


def test_tags_and_redaction_lists():
    s = load({})
    assert (s.inject_tags, s.k8s_metadata_capture, s.redact_headers, s.redact_json_keys) == ((), False, (), ())
    assert s.k8s_service_account_dir == "/var/run/secrets/kubernetes.io/serviceaccount"
    s = load({"AKTO_INJECT_TAGS": " env = prod ; team=payments ; url=a=b;empty=;",
              "AKTO_REDACT_HEADERS": "Authorization, COOKIE,,cookie ,x-api-key",
              "AKTO_REDACT_JSON_KEYS": "Password, token,", "AKTO_K8_METADATA_CAPTURE": "true"})
    assert s.inject_tags == (("env", "prod"), ("team", "payments"), ("url", "a=b"), ("empty", ""))
    assert s.redact_headers == ("authorization", "cookie", "x-api-key")
    assert s.redact_json_keys == ("password", "token")
    assert s.k8s_metadata_capture is True


BAD_VALUES = [
    ("AKTO_MODULE_DISCOVERY_CONFIG", "not json", "not valid JSON"),
    ("AKTO_MODULE_DISCOVERY_CONFIG", '{"key":{"eq":"a"}}', "expected a JSON list"),
    ("AKTO_MODULE_DISCOVERY_CONFIG", '[{"key":{"eq":"a"},"value":{"regex":"("}}]', "rule 0"),
    ("AKTO_MODULE_DISCOVERY_CONFIG", '[{"key":{"eq":"a","ifAbsent":"x"}}]', "ifAbsent"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "abc", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "0", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "-5", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "nan", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "inf", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "1e999", "positive number of seconds"),
    ("TRAFFIC_INACTIVITY_THRESHOLD", "30s", "positive number of seconds"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "abc", "whole number from 1 to"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "0", "whole number from 1 to"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "-1", "whole number from 1 to"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "4096.5", "whole number from 1 to"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "40960000", "whole number from 1 to"),
    ("TRAFFIC_MAX_ACTIVE_CONN", "4_096", "whole number from 1 to"),
    ("TRAFFIC_DISABLE_EGRESS", "maybe", "expected true or false"),
    ("AKTO_MEM_THRESH_RESTART", "800MB", "positive whole number of MB"),
    ("AKTO_MEM_THRESH_RESTART", "0", "positive whole number of MB"),
    ("TRAFFIC_BUFFER_THRESHOLD", "-600", "positive whole number of MB"),
    ("TRAFFIC_BUFFER_THRESHOLD", "NaN", "positive whole number of MB"),
    ("AKTO_IGNORE_IP_TRAFFIC", "2", "expected true or false"),
    ("AKTO_IGNORE_CLOUD_METADATA_CALLS", "y", "expected true or false"),
    ("KAFKA_POLL_INTERVAL", "0", "positive number of seconds"),
    ("KAFKA_POLL_INTERVAL", "half", "positive number of seconds"),
    ("UPROBE_POLL_INTERVAL", "5m", "positive number of minutes"),
    ("UPROBE_POLL_INTERVAL", "-5", "positive number of minutes"),
    ("CAPTURE_ALL", "all", "expected true or false"),
    ("CAPTURE_SSL", "tls", "expected true or false"),
    ("PROBE_ALL_PID", "every", "expected true or false"),
    ("AKTO_KAFKA_BROKER_MAL", "kafka", "has no port"),
    ("AKTO_KAFKA_BROKER_MAL", "kafka:0", "port '0'"),
    ("AKTO_KAFKA_BROKER_MAL", "kafka:99999", "port '99999'"),
    ("AKTO_KAFKA_BROKER_MAL", "kafka:abc", "port 'abc'"),
    ("AKTO_KAFKA_BROKER_MAL", "a:1,,b", "no port"),
    ("AKTO_KAFKA_BROKER_MAL", ",", "expected host:port"),
    ("AKTO_KAFKA_BROKER_MAL", "::1:9092", "brackets"),
    ("AKTO_KAFKA_BROKER_MAL", "[::1", "bracketed IPv6"),
    ("AKTO_KAFKA_BROKER_MAL", "[kafka]:9092", "bracketed IPv6"),
    ("AKTO_KAFKA_BROKER_MAL", "[::1]x", "after ']'"),
    ("AKTO_KAFKA_BROKER_MAL", "http://kafka:9092", "no scheme"),
    ("AKTO_KAFKA_BROKER_MAL", "10.0.0.300:9092", "not an IPv4 address"),
    ("AKTO_KAFKA_BROKER_MAL", "bad_-host-:9092", "not a host name"),
    ("AKTO_NLB_IP", "10.0.0.1:", "port ''"),
    ("AKTO_NLB_IP", "my lb", "not a host name"),
    ("AKTO_NLB_IP", "1.2.3.4.5", "not an IPv4 address"),
    ("AKTO_KAFKA_TOPIC", "my topic", "Kafka topic name"),
    ("AKTO_KAFKA_TOPIC", "..", "Kafka topic name"),
    ("AKTO_KAFKA_COMPRESSION", "brotli", "none, gzip, lz4, snappy, zstd"),
    ("KAFKA_USERNAME", "bob", "KAFKA_PASSWORD is not set"),
    ("USE_TLS", "tls1.2", "expected true or false"),
    ("KAFKA_CA_FILE", "/nonexistent/ca.pem", "existing file"),
    ("AKTO_HEARTBEAT_TOPIC", "a/b", "Kafka topic name"),
    ("AKTO_HEARTBEAT_INTERVAL", "0", "positive number of seconds"),
    ("AKTO_WORKERS", "0", "from 1 to 64"),
    ("AKTO_WORKERS", "65", "from 1 to 64"),
    ("AKTO_WORKERS", "auto", "from 1 to 64"),
    ("AKTO_SOCK_TRACEPOINTS", "maybe", "expected one of auto, on, off"),
    ("AKTO_RING_BUFFER_MB", "48", "power of two"),
    ("AKTO_RING_BUFFER_MB", "2048", "power of two"),
    ("AKTO_MAX_BODY_BYTES", "-1", "0 or more"),
    ("AKTO_MAX_BODY_BYTES", "1MB", "0 or more"),
    ("AKTO_ACCOUNT_ID", "acme", "whole number"),
    ("AKTO_VXLAN_ID", "-1", "whole number"),
    ("AKTO_LOG_LEVEL", "verbose", "debug, info, warning, error"),
    ("AKTO_STATS_INTERVAL", "-1", "positive number of seconds"),
    ("AKTO_KAFKA_BATCH_WRITER", "fast", "expected true or false"),
    ("AKTO_METRICS_ADDR", "9464", "expected host:port ("),
    ("AKTO_METRICS_ADDR", "http://0.0.0.0:9464", "no scheme"),
    ("AKTO_ENV_FILE", "/nonexistent/env", "readable file"),
    ("AKTO_INJECT_TAGS", "env", "has no '='"),
    ("AKTO_INJECT_TAGS", "env=prod;team", "pair 2 ('team') has no '='"),
    ("AKTO_INJECT_TAGS", "=prod", "empty key"),
    ("AKTO_INJECT_TAGS", "my env=prod", "without spaces"),
    ("AKTO_INJECT_TAGS", "env=dev;env=prod", "given twice"),
    ("AKTO_K8_METADATA_CAPTURE", "yes please", "expected true or false"),
    ("AKTO_REDACT_HEADERS", "authorization:", "not a header name"),
    ("AKTO_REDACT_HEADERS", "cookie,x api key", "'x api key' is not a header name"),
]


@pytest.mark.parametrize("name, raw, expected", BAD_VALUES)
def test_bad_value_gives_one_line_naming_variable_and_value(name, raw, expected):
    message = error_of({name: raw})
    assert message.startswith(f"{name}={raw!r}: ")
    assert expected in message
    assert "\n" not in message


# Free text: any value is valid, so there is no bad value to test.
FREE_TEXT = {"AKTO_MONGO_CONN", "AKTO_DAEMONSET_ID", "NODE_NAME", "POD_NAME", "KAFKA_PASSWORD", "AKTO_IMAGE_VERSION",
             "AKTO_REDACT_JSON_KEYS", "AKTO_K8_SERVICE_ACCOUNT_DIR"}


def test_every_variable_has_a_bad_value_case():
    covered = {name for name, _, _ in BAD_VALUES}
    assert KNOWN_VARIABLES - FREE_TEXT - covered == set()


def test_multi_line_value_is_shown_on_one_line():
    message = error_of({"AKTO_MODULE_DISCOVERY_CONFIG": '[\n  {"key": {"eq": "a"}, "bad": 1}\n]'})
    assert "\n" not in message
    assert message.startswith("AKTO_MODULE_DISCOVERY_CONFIG='[\\n")
    assert "rule 0: unknown field bad" in message


def test_very_long_value_is_cut_in_the_message():
    message = error_of({"TRAFFIC_MAX_ACTIVE_CONN": "x" * 5000})
    assert len(message) < 400


def test_password_without_username_does_not_echo_password():
    message = error_of({"KAFKA_PASSWORD": "hunter2"})
    assert message.startswith("KAFKA_PASSWORD=")
    assert "KAFKA_USERNAME is not set" in message
    assert "hunter2" not in message


def test_capture_nothing_is_an_error():
    message = error_of({"CAPTURE_ALL": "false", "CAPTURE_SSL": "no"})
    assert message.startswith("CAPTURE_ALL='false' and CAPTURE_SSL='no'")


def test_ca_file_must_exist(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load({"KAFKA_CA_FILE": str(ca)}).kafka_ca_file == str(ca)
    assert "existing file" in error_of({"KAFKA_CA_FILE": str(tmp_path)})


def test_kafka_credentials_together():
    s = load({"KAFKA_USERNAME": "bob", "KAFKA_PASSWORD": " p w ", "AKTO_NLB_IP": "kafka"})
    assert (s.kafka_username, s.kafka_password) == ("bob", " p w ")


# --- brokers ---------------------------------------------------------------


def test_broker_list_wins_over_nlb_ip():
    s = load({"AKTO_KAFKA_BROKER_MAL": "k1:9093, k2:9094", "AKTO_NLB_IP": "lb.example.com"})
    assert s.kafka_brokers == ("k1:9093", "k2:9094")


def test_nlb_ip_used_when_no_broker_list():
    assert load({"AKTO_NLB_IP": "lb.example.com"}).kafka_brokers == ("lb.example.com:9092",)
    assert load({"AKTO_NLB_IP": "10.1.2.3:19092"}).kafka_brokers == ("10.1.2.3:19092",)
    assert load({"AKTO_KAFKA_BROKER_MAL": "", "AKTO_NLB_IP": "lb"}).kafka_brokers == ("lb:9092",)


def test_bad_nlb_ip_ignored_when_broker_list_given():
    s = load({"AKTO_KAFKA_BROKER_MAL": "k1:9092", "AKTO_NLB_IP": "not valid!"})
    assert s.kafka_brokers == ("k1:9092",)


@pytest.mark.parametrize(
    "raw, brokers",
    [
        ("[::1]", ("[::1]:9092",)),
        ("[fd00::1]:19092", ("[fd00::1]:19092",)),
        ("fd00::1", ("[fd00::1]:9092",)),
        ("Kafka-0.kafka.svc.cluster.local.", ("Kafka-0.kafka.svc.cluster.local.:9092",)),
        ("internal-akto-nlb-123.us-east-1.elb.amazonaws.com", ("internal-akto-nlb-123.us-east-1.elb.amazonaws.com:9092",)),
    ],
)
def test_nlb_ip_forms(raw, brokers):
    assert load({"AKTO_NLB_IP": raw}).kafka_brokers == brokers


def test_broker_list_forms():
    s = load({"AKTO_KAFKA_BROKER_MAL": "[2001:db8::1]:9092,10.0.0.1:9092,kafka:9092,"})
    assert s.kafka_brokers == ("[2001:db8::1]:9092", "10.0.0.1:9092", "kafka:9092")


def test_no_broker_means_stdout():
    assert load({}).kafka_brokers == ()


# --- Kubernetes, host identity ---------------------------------------------


def test_probe_all_pid_defaults_by_kubernetes():
    assert load({}).probe_all_pid is True
    assert load({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}).probe_all_pid is False
    assert load({"KUBERNETES_SERVICE_HOST": ""}).probe_all_pid is True
    assert load({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "PROBE_ALL_PID": "true"}).probe_all_pid is True
    assert load({"PROBE_ALL_PID": "false"}).probe_all_pid is False


def test_daemonset_id_from_machine_id(tmp_path):
    missing, empty, good = tmp_path / "missing", tmp_path / "empty", tmp_path / "machine-id"
    empty.write_text("\n")
    good.write_text("0123456789abcdef0123456789abcdef\n")
    a = load({}, machine_id_paths=(str(missing), str(empty), str(good)))
    b = load({"NODE_NAME": "other"}, machine_id_paths=(str(good),), hostname="elsewhere")
    assert a.daemonset_id == b.daemonset_id  # from the machine id, not the names
    assert len(a.daemonset_id) == 16
    assert "0123456789abcdef" not in a.daemonset_id


def test_daemonset_id_falls_back_to_node_name(tmp_path):
    uninit = tmp_path / "machine-id"
    uninit.write_text("uninitialized\n")
    a = load({"NODE_NAME": "node-a"}, machine_id_paths=(str(uninit), str(tmp_path)))
    b = load({"NODE_NAME": "node-b"}, machine_id_paths=())
    assert a.daemonset_id == default_daemonset_id((), "node-a")
    assert a.daemonset_id != b.daemonset_id
    assert load({}, hostname="h").daemonset_id == default_daemonset_id((), "h")


def test_daemonset_id_explicit():
    assert load({"AKTO_DAEMONSET_ID": " ds-1 "}).daemonset_id == "ds-1"


def test_kubernetes_trusts_only_the_host_machine_id(monkeypatch):
    tried = []
    real_open = open

    def spy(path, *args, **kwargs):
        tried.append(path)
        raise FileNotFoundError(path)

    monkeypatch.setattr("builtins.open", spy)
    try:
        Settings.from_env({"KUBERNETES_SERVICE_HOST": "x", "NODE_NAME": "n"}, cpu_count=1)
    finally:
        monkeypatch.setattr("builtins.open", real_open)
    assert tried == ["/host/etc/machine-id"]


def test_node_and_pod_names():
    s = load({"NODE_NAME": "node-1", "POD_NAME": "akto-collector-x7"})
    assert (s.node_name, s.pod_name) == ("node-1", "akto-collector-x7")


# --- helpers ---------------------------------------------------------------


def test_unknown_variables():
    env = {
        "AKTO_NLB_IP": "x",
        "AKTO_KAFKA_BROKER_URL": "x",  # a typo or another collector's variable
        "TRAFFIC_MAX_ACTIVE_CONNS": "1",
        "AKTO_RUNTIME_SERVICE_HOST": "10.0.0.1",  # Kubernetes service links
        "AKTO_RUNTIME_SERVICE_PORT_HTTP": "80",
        "AKTO_RUNTIME_PORT": "tcp://10.0.0.1:80",
        "AKTO_RUNTIME_PORT_80_TCP_ADDR": "10.0.0.1",
        "PATH": "/bin",
        "KAFKA_POLL_INTERVAL": "1",
    }
    assert unknown_variables(env) == ["AKTO_KAFKA_BROKER_URL", "TRAFFIC_MAX_ACTIVE_CONNS"]
    assert unknown_variables(os.environ | SEED_ENV) == unknown_variables(os.environ)


def test_describe_masks_secrets():
    s = load(SEED_ENV | {"KAFKA_USERNAME": "bob", "KAFKA_PASSWORD": "hunter2"})
    d = s.describe()
    assert d["kafka_password"] == "***"
    assert d["kafka_username"] == "bob"
    assert d["mongo_conn"] == "mongodb://user:***@mongo:27017/admini"
    assert "hunter2" not in repr(d) and ":secret@" not in repr(d)
    assert "hunter2" not in repr(s)
    assert d["discovery_rules"][0]["key"]["eq"] == "x-forwarded-client-cert"
    assert d["kafka_brokers"] == ["10.0.0.12:9092"]
    assert set(d) == set(Settings.__dataclass_fields__)


def test_warnings():
    s = load({"TRAFFIC_BUFFER_THRESHOLD": "900", "USE_TLS": "true"})
    notes = s.warnings()
    assert any("TRAFFIC_BUFFER_THRESHOLD=900" in n for n in notes)
    assert any("USE_TLS" in n and "stdout" in n for n in notes)


def test_pair_filter_from_settings():
    s = load({"AKTO_MODULE_DISCOVERY_CONFIG": SEED_RULES, "AKTO_IGNORE_IP_TRAFFIC": "1"})
    pf = PairFilter.from_settings(s)
    assert pf.rules == s.discovery_rules and pf.ignore_ip_traffic and not pf.ignore_cloud_metadata


# --- the shipped manifest --------------------------------------------------


def test_compression_without_its_library_is_refused_before_start():
    import importlib.util

    if importlib.util.find_spec("snappy") is not None:
        pytest.skip("python-snappy is installed here")
    message = error_of({"AKTO_KAFKA_COMPRESSION": "snappy"})
    assert message.startswith("AKTO_KAFKA_COMPRESSION='snappy': needs the Python package snappy")
    assert "zstd" in message and "lz4" in message  # what can be used instead
    assert load({"AKTO_KAFKA_COMPRESSION": "zstd"}).kafka_compression == "zstd"  # zstandard is a dependency


def test_deeply_nested_discovery_config_is_a_config_error():
    message = error_of({"AKTO_MODULE_DISCOVERY_CONFIG": "[" * 100000 + "]" * 100000})
    assert message.startswith("AKTO_MODULE_DISCOVERY_CONFIG='[[[") and message.endswith(": nested too deeply")


def test_docs_configuration_tables_are_made_from_the_table():
    from akto_collector.config import markdown_tables

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")
    with open(path, encoding="utf-8") as fh:
        doc = fh.read()
    assert markdown_tables() in doc, (
        "docs/configuration.md is out of date: run `make docs`")


def test_every_variable_is_read_into_a_field_of_its_own_or_a_declared_alternative():
    from akto_collector.config import VARIABLES

    fields = [v.field for v in VARIABLES]
    shared = {f for f in fields if fields.count(f) > 1}
    assert shared == {"kafka_brokers"}  # AKTO_KAFKA_BROKER_MAL wins over AKTO_NLB_IP
    assert set(fields) == set(Settings.__dataclass_fields__)
