"""Discovery rules, the ignore rules and their grammar (akto_collector.filters)."""

from __future__ import annotations

import pickle

import pytest

from akto_collector.events import (
    ROLE_CLIENT,
    ROLE_SERVER,
    ConnId,
    Exchange,
    HttpRequest,
    HttpResponse,
)
from akto_collector.filters import (
    DROP_CLOUD_METADATA,
    DROP_DISCOVERY,
    DROP_IP_HOST,
    DiscoveryRule,
    PairFilter,
    is_cloud_metadata_host,
    is_ip_host,
    parse_discovery_config,
    request_host,
)

SEED_EXAMPLE = (
    '[{"key":{"eq":"x-forwarded-client-cert","ifAbsent":"reject"},"value":{"regex":".*bookinfo.*"}}]'
)


def pair(headers=(), target="/", role=ROLE_SERVER) -> Exchange:
    return Exchange(
        conn=ConnId(1, 3, 0),
        role=role,
        tls=False,
        request=HttpRequest("GET", target, "HTTP/1.1", list(headers), b""),
        response=HttpResponse("HTTP/1.1", 200, "OK", [], b""),
    )


def rules(text: str) -> PairFilter:
    return PairFilter(parse_discovery_config(text))


# --- grammar ---------------------------------------------------------------


def test_seed_example_parses_as_written():
    (rule,) = parse_discovery_config(SEED_EXAMPLE)
    assert rule.header == "x-forwarded-client-cert"
    assert rule.reject_if_absent is True
    assert rule.pattern is not None and rule.pattern.pattern == ".*bookinfo.*"


@pytest.mark.parametrize("text", [None, "", "   ", "\n", "[]"])
def test_empty_config_means_no_rules(text):
    assert parse_discovery_config(text) == ()


def test_if_absent_defaults_to_accept():
    (rule,) = parse_discovery_config('[{"key":{"eq":"X-Team"},"value":{"regex":"a"}}]')
    assert rule.reject_if_absent is False
    assert rule.header == "x-team"


def test_if_absent_is_case_insensitive():
    (rule,) = parse_discovery_config('[{"key":{"eq":"x","ifAbsent":"REJECT"}}]')
    assert rule.reject_if_absent is True


def test_rule_without_value_tests_presence_only():
    (rule,) = parse_discovery_config('[{"key":{"eq":"x","ifAbsent":"reject"}}]')
    assert rule.pattern is None
    assert rule.passes("anything")
    assert not rule.passes(None)


def test_describe_round_trips():
    parsed = parse_discovery_config(SEED_EXAMPLE)
    import json

    again = parse_discovery_config(json.dumps([r.describe() for r in parsed]))
    assert [r.describe() for r in again] == [r.describe() for r in parsed]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{", "not valid JSON"),
        ('{"key":{"eq":"x"}}', "expected a JSON list"),
        ("null", "expected a JSON list"),
        ('["x"]', "rule 0: expected an object"),
        ('[{"value":{"regex":"a"}}]', 'rule 0: missing "key"'),
        ('[{"key":"x"}]', 'rule 0: missing "key"'),
        ('[{"key":{"ifAbsent":"reject"}}]', "rule 0: key.eq=None"),
        ('[{"key":{"eq":""}}]', "rule 0: key.eq=''"),
        ('[{"key":{"eq":5}}]', "rule 0: key.eq=5"),
        ('[{"key":{"eq":"a"}},{"key":{"neq":"x"}}]', "rule 1: unknown operator key.neq"),
        ('[{"key":{"eq":"a","ifAbsent":"maybe"}}]', "rule 0: key.ifAbsent='maybe'"),
        ('[{"key":{"eq":"a","ifAbsent":true}}]', "rule 0: key.ifAbsent=True"),
        ('[{"key":{"eq":"a"},"value":{"eq":"b"}}]', "rule 0: unknown operator value.eq"),
        ('[{"key":{"eq":"a"},"value":{"regex":"a","neq":"b"}}]', "unknown operator value.neq"),
        ('[{"key":{"eq":"a"},"value":"b"}]', 'rule 0: "value" must be an object'),
        ('[{"key":{"eq":"a"},"value":{"regex":1}}]', "rule 0: value.regex=1"),
        ('[{"key":{"eq":"a"},"value":{"regex":"("}}]', "rule 0: value.regex='(' does not compile"),
        ('[{"key":{"eq":"a"},"values":{"regex":"x"}}]', "rule 0: unknown field values"),
    ],
)
def test_bad_config_names_rule_and_part(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_discovery_config(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_regex_is_not_replaced_by_match_all():
    with pytest.raises(ValueError):
        parse_discovery_config('[{"key":{"eq":"a"},"value":{"regex":"[unclosed"}}]')


# --- discovery -------------------------------------------------------------


def test_seed_example_keeps_bookinfo_and_drops_the_rest():
    pf = rules(SEED_EXAMPLE)
    xfcc = "By=spiffe://cluster.local/ns/bookinfo/sa/reviews;Hash=abc"
    assert pf.check(pair([("X-Forwarded-Client-Cert", xfcc)])) is None
    other = "By=spiffe://cluster.local/ns/shop/sa/cart;Hash=abc"
    assert pf.check(pair([("x-forwarded-client-cert", other)])) == DROP_DISCOVERY
    assert pf.check(pair([("Host", "svc")])) == DROP_DISCOVERY  # absent, reject


def test_header_name_matches_case_insensitively_both_ways():
    pf = rules('[{"key":{"eq":"X-TEAM","ifAbsent":"reject"},"value":{"regex":"^red$"}}]')
    assert pf.check(pair([("x-team", "red")])) is None
    assert pf.check(pair([("X-Team", "red")])) is None
    assert pf.check(pair([("X-Team", "blue")])) == DROP_DISCOVERY


def test_value_regex_searches_anywhere_and_is_case_sensitive():
    pf = rules('[{"key":{"eq":"x"},"value":{"regex":"book"}}]')
    assert pf.check(pair([("x", "my-bookinfo-app")])) is None
    assert pf.check(pair([("x", "BOOK")])) == DROP_DISCOVERY
    pf = rules('[{"key":{"eq":"x"},"value":{"regex":"(?i)book"}}]')
    assert pf.check(pair([("x", "BOOK")])) is None


def test_absent_header_with_accept_passes():
    pf = rules('[{"key":{"eq":"x","ifAbsent":"accept"},"value":{"regex":"^a$"}}]')
    assert pf.check(pair([("y", "b")])) is None
    assert pf.check(pair([("x", "b")])) == DROP_DISCOVERY


def test_repeated_header_values_are_joined():
    pf = rules('[{"key":{"eq":"x"},"value":{"regex":"^a, b$"}}]')
    assert pf.check(pair([("X", "a"), ("other", "z"), ("x", "b")])) is None
    assert pf.check(pair([("x", "a")])) == DROP_DISCOVERY


def test_every_rule_must_pass():
    pf = rules(
        '[{"key":{"eq":"a","ifAbsent":"reject"},"value":{"regex":"1"}},'
        '{"key":{"eq":"b","ifAbsent":"reject"},"value":{"regex":"2"}}]'
    )
    assert pf.check(pair([("a", "1"), ("b", "2")])) is None
    assert pf.check(pair([("a", "1"), ("b", "3")])) == DROP_DISCOVERY
    assert pf.check(pair([("a", "1")])) == DROP_DISCOVERY


def test_host_rule_uses_host_header_then_absolute_target_then_argument():
    pf = rules('[{"key":{"eq":"host","ifAbsent":"reject"},"value":{"regex":"^api\\\\."}}]')
    assert pf.check(pair([("HOST", "api.example.com")])) is None
    assert pf.check(pair([("Host", "www.example.com")])) == DROP_DISCOVERY
    assert pf.check(pair([], target="http://api.example.com:8080/x")) is None
    assert pf.check(pair([], target="/x"), host="api.internal") is None
    assert pf.check(pair([], target="/x")) == DROP_DISCOVERY  # no host at all: absent
    # The Host header wins over the argument.
    assert pf.check(pair([("Host", "www.x")]), host="api.internal") == DROP_DISCOVERY


def test_request_host_sources():
    assert request_host(pair([("Host", " svc:8080 ")])) == "svc:8080"
    assert request_host(pair([], target="http://user:pw@svc:81/a?b")) == "svc:81"
    assert request_host(pair([], target="https://svc?x=1")) == "svc"
    assert request_host(pair([], target="/a"), "fallback") == "fallback"
    assert request_host(pair([], target="/a")) is None


# --- ignore rules ----------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "10.0.0.1:80", "[::1]", "[::1]:8080", "::1", "fd00::1", "[fe80::1%eth0]:80",
     "::ffff:10.0.0.1", " 10.0.0.1 "],
)
def test_ip_hosts(host):
    assert is_ip_host(host)


@pytest.mark.parametrize(
    "host", ["svc", "svc:8080", "api.example.com", "10.0.0.1.nip.io", "1-2-3-4.example", "[nonsense]", ""]
)
def test_name_hosts(host):
    assert not is_ip_host(host)


def test_ignore_ip_traffic_drops_ip_hosts_only():
    pf = PairFilter(ignore_ip_traffic=True)
    assert pf.check(pair([("Host", "10.0.0.1:8080")])) == DROP_IP_HOST
    assert pf.check(pair([("Host", "[2001:db8::1]:443")])) == DROP_IP_HOST
    assert pf.check(pair([], target="http://192.168.1.1/x")) == DROP_IP_HOST
    assert pf.check(pair([]), host="172.16.0.1") == DROP_IP_HOST
    assert pf.check(pair([("Host", "svc.ns.svc.cluster.local")])) is None
    assert pf.check(pair([])) is None  # no host known: nothing to judge
    # Off by default.
    assert PairFilter().check(pair([("Host", "10.0.0.1")])) is None


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "169.254.169.254:80", "[fd00:ec2::254]", "[fd00:ec2::254]:80",
     "fd00:ec2::254", "metadata.google.internal", "Metadata.Google.Internal:80",
     "metadata.google.internal.", "::ffff:169.254.169.254"],
)
def test_cloud_metadata_hosts(host):
    assert is_cloud_metadata_host(host)
    pf = PairFilter(ignore_cloud_metadata=True)
    assert pf.check(pair([("Host", host)])) == DROP_CLOUD_METADATA


@pytest.mark.parametrize("host", ["169.254.169.253", "metadata", "google.internal", "fd00:ec2::253", "svc"])
def test_not_cloud_metadata_hosts(host):
    assert not is_cloud_metadata_host(host)
    assert PairFilter(ignore_cloud_metadata=True).check(pair([("Host", host)])) is None


def test_cloud_metadata_by_peer_address():
    pf = PairFilter(ignore_cloud_metadata=True)
    assert pf.check(pair([], role=ROLE_CLIENT), peer_ip="169.254.169.254:80") == DROP_CLOUD_METADATA
    assert pf.check(pair([("Host", "x")]), peer_ip="[fd00:ec2::254]:80") == DROP_CLOUD_METADATA
    assert pf.check(pair([("Host", "x")]), peer_ip="10.0.0.9:80") is None
    assert PairFilter().check(pair([]), peer_ip="169.254.169.254:80") is None


def test_metadata_reason_wins_over_ip_reason():
    pf = PairFilter(ignore_ip_traffic=True, ignore_cloud_metadata=True)
    assert pf.check(pair([("Host", "169.254.169.254")])) == DROP_CLOUD_METADATA
    assert pf.check(pair([("Host", "10.1.1.1")])) == DROP_IP_HOST


def test_from_settings_reads_the_three_settings():
    class FakeSettings:
        discovery_rules = parse_discovery_config(SEED_EXAMPLE)
        ignore_ip_traffic = True
        ignore_cloud_metadata = False

    pf = PairFilter.from_settings(FakeSettings())
    assert pf.rules == FakeSettings.discovery_rules
    assert pf.ignore_ip_traffic and not pf.ignore_cloud_metadata


def test_rules_pickle_for_the_workers():
    parsed = parse_discovery_config(SEED_EXAMPLE)
    assert pickle.loads(pickle.dumps(parsed)) == parsed
    assert isinstance(parsed[0], DiscoveryRule)


def test_a_busy_pair_passes_the_seed_filter():
    # How fast check() runs is bench/bench_filters.py's figure, not a test's.
    headers = [("Host", "svc:8080"), ("User-Agent", "curl/8"), ("Accept", "*/*")] + [
        (f"X-H{i}", "v" * 20) for i in range(12)
    ] + [("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/bookinfo/sa/x")]
    ex = pair(headers)
    assert PairFilter().check(ex, peer_ip="10.0.0.2:5555") is None
    assert PairFilter(parse_discovery_config(SEED_EXAMPLE), True, True).check(ex, peer_ip="10.0.0.2:5555") is None


def test_huge_host_is_neither_ip_nor_metadata():
    assert not is_ip_host("a" * 100_000)
    pf = PairFilter(ignore_ip_traffic=True, ignore_cloud_metadata=True)
    assert pf.check(pair([("Host", "x" * 100_000)])) is None
