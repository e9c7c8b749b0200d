"""Settings from a YAML file, `KDNS_*` variables and flags (flags win over the environment, the
environment over the file), errors naming the key, and reload on SIGHUP and on a file swapped
as a ConfigMap update swaps it, with no failed query."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest
import yaml

from kdns import cli, config
from kdns.address import SocketAddress, listen_addresses
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners, ServeConfig, TcpLimits, WatchOptions
from kdns.core import budgets
from kdns.core.message import DEFAULT_MAX_UDP
from kdns.errors import KdnsError
from tests.helpers import METRICS, QueryLoop, answer_ttl, http_get, http_port, metric, wait
from tests.process import EXAMPLE, KdnsServer, run_kdns


def _settings(argv: list[str], environ: dict[str, str] | None = None) -> ServeConfig:
    parser = cli._parser()
    args = parser.parse_args(argv)
    return cli._checked_serve_config(cli._serve_settings(parser, argv, args, environ or {}))


def _write(path: Path, settings: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "kdns.yaml",
        {"ttl": 7, "cache-size": 5, "upstream": ["127.0.0.1:5300", "127.0.0.2"], "prefetch": True, "pods": "verified"},
    )
    base = ["serve", "--snapshot", str(EXAMPLE), "--config", str(config)]
    from_file = _settings(base)
    assert from_file.ttl == 7 and from_file.forward.cache_size == 5 and from_file.forward.prefetch
    assert [str(u) for u in from_file.forward.upstreams] == ["127.0.0.1:5300", "127.0.0.2:53"]
    assert from_file.pod_mode.value == "verified" and from_file.config_file == str(config)
    assert _settings(base, {"KDNS_TTL": "9", "KDNS_PREFETCH": "false"}).ttl == 9
    assert not _settings(base, {"KDNS_PREFETCH": "no"}).forward.prefetch
    assert _settings([*base, "--ttl", "11"], {"KDNS_TTL": "9"}).ttl == 11
    assert _settings(["serve", "--snapshot", str(EXAMPLE)], {"KDNS_CONFIG": str(config)}).ttl == 7
    assert _settings(
        ["serve", "--snapshot", str(EXAMPLE)], {"KDNS_UPSTREAM": "127.0.0.9,127.0.0.8:54"}
    ).forward.upstreams


def test_unknown_keys_and_bad_values_name_the_file_or_variable_and_the_key(tmp_path: Path) -> None:
    base = ["serve", "--snapshot", str(EXAMPLE), "--config"]
    cases: list[tuple[dict[str, object], str]] = [
        ({"cache-sise": 5}, "unknown key 'cache-sise'"),
        ({"ttl": "soon"}, "key ttl: 'soon' is not valid"),
        ({"pods": "sometimes"}, "key pods: 'sometimes' is not one of"),
        ({"prefetch": "yes please"}, "key prefetch: expected true or false"),
        ({"listen": {"a": 1}}, "key listen"),
    ]
    for settings, message in cases:
        path = _write(tmp_path / "bad.yaml", settings)
        try:
            _settings([*base, str(path)])
        except KdnsError as error:
            assert str(path) in str(error) and message in str(error), str(error)
        else:
            raise AssertionError(f"{settings} was accepted")
    for variable, message in (("KDNS_NOPE", "KDNS_NOPE"), ("KDNS_TTL", "KDNS_TTL")):
        try:
            _settings(["serve", "--snapshot", str(EXAMPLE)], {variable: "x"})
        except KdnsError as error:
            assert message in str(error)
        else:
            raise AssertionError(variable)
    result = run_kdns(
        "serve", "--config", str(_write(tmp_path / "bad.yaml", {"ttl": 99999})), "--listen", "127.0.0.1:0"
    )
    assert result.returncode == 2 and "--ttl 99999" in result.stderr and "Traceback" not in result.stderr


def test_reload_on_sighup_and_on_a_configmap_style_swap_with_no_failed_query(tmp_path: Path) -> None:
    # A ConfigMap volume: the file is a symlink into a directory that an update replaces.
    first = tmp_path / "..2026_12_01"
    first.mkdir()
    _write(first / "kdns.yaml", {"log-level": "info", "ttl": 30})
    (tmp_path / "..data").symlink_to(first.name)
    config = tmp_path / "kdns.yaml"
    config.symlink_to(Path("..data") / "kdns.yaml")
    server = KdnsServer("--snapshot", str(EXAMPLE), "--config", str(config), listen=("127.0.0.1:0",))
    loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.12.34"]})
    try:
        # SIGHUP with a changed file: the log level and the TTL apply at once (issue 19, point 4).
        _write(first / "kdns.yaml", {"log-level": "debug", "ttl": 60})
        server.process.send_signal(signal.SIGHUP)
        wait(lambda: "reload applied: ttl, log_level" in server.log_text(), 10, "SIGHUP reload")
        assert answer_ttl(server, "web.prod.svc.cluster.local") == 60
        # A ConfigMap update swaps the directory; a bad configuration is refused, the old one stays.
        second = tmp_path / "..2026_12_02"
        second.mkdir()
        _write(second / "kdns.yaml", {"log-level": "debug", "ttl": "never"})
        swap = tmp_path / "..data_tmp"
        swap.symlink_to(second.name)
        os.replace(swap, tmp_path / "..data")
        wait(lambda: "reload refused" in server.log_text(), 10, "the swapped file to be read")
        assert "key ttl" in server.log_text()
        loop.wait_for(11)  # and the old configuration keeps answering
    finally:
        loop.stop()
        assert server.stop() == 0
    assert loop.asked > 10 and loop.wrong == []


# -- hostile configuration files (issue 17, K7) ------------------------------------------------

NESTED = "upstream: " + "[" * 5000 + "]" * 5000 + "\n"  # 10 KB: RecursionError in the Python composer
# A "billion laughs": nine aliases of nine, 9**9 strings once expanded, a few hundred bytes as written.
ALIAS_BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "upstream: *i\n"
)


def test_hostile_files_are_refused_with_the_file_named_never_a_crash(tmp_path: Path) -> None:
    """A 10 KB nest of brackets raised RecursionError, and an alias bomb under `upstream:` was
    expanded by the error message's repr until MemoryError: either ended kdns, at start and on a
    reload. Each is now an error naming the file; so is a file over --config-max-bytes."""
    base = ["serve", "--snapshot", str(EXAMPLE), "--config"]
    big = "# " + "x" * 2_000_000 + "\nttl: 5\n"
    long_value = {"pods": "v" * 100_000}
    for name, text, message in (
        ("nested.yaml", NESTED, "invalid YAML"),
        ("bomb.yaml", ALIAS_BOMB, "aliases expand past 1048576 bytes"),
        ("big.yaml", big, "larger than 1048576 bytes"),
        ("long.yaml", yaml.safe_dump(long_value), "key pods: 'vvvv"),
    ):
        path = tmp_path / name
        path.write_text(text)
        try:
            _settings([*base, str(path)])
        except KdnsError as error:
            assert str(path) in str(error) and message in str(error), str(error)
            assert len(str(error)) < 600, f"{name}: the error quotes too much ({len(str(error))} characters)"
        else:
            raise AssertionError(f"{name} was accepted")
    assert _settings([*base, str(tmp_path / "big.yaml"), "--config-max-bytes", "4Mi"]).ttl == 5
    result = run_kdns("serve", "--config", str(tmp_path / "bomb.yaml"), "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "aliases expand" in result.stderr and "Traceback" not in result.stderr


def test_a_hostile_reload_is_refused_and_counted_while_dns_is_answered(tmp_path: Path) -> None:
    """The same files as a reload: refused, counted in kdns_reload_failures_total, the running
    configuration kept; and a 1 MiB file is parsed off the event loop (it stalled DNS for 3 s,
    losing 1,585 of 3,999 queries)."""
    config = tmp_path / "kdns.yaml"
    config.write_text("log-level: info\n")
    server = KdnsServer("--snapshot", str(EXAMPLE), "--config", str(config), *METRICS, listen=("127.0.0.1:0",))
    port = http_port(server, "/metrics")
    loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.12.34"]}, timeout=1.0)

    def refused(text: str, count: int, within: float = 20) -> None:
        config.write_text(text)
        server.process.send_signal(signal.SIGHUP)
        failures = "kdns_reload_failures_total"
        wait(lambda: metric(http_get(port, "/metrics")[1], failures) == count, within, f"reload {count} refused")

    try:
        for count, text in enumerate((NESTED, ALIAS_BOMB, "# " + "x" * 2_000_000), 1):
            refused(text, count)
            loop.wait_for(5)
        heavy = "upstream:\n" + "".join(f"  - 10.{i >> 8 & 255}.{i & 255}.{i >> 16}\n" for i in range(60_000))
        assert 900_000 < len(heavy) < 1 << 20
        for count in (4, 5):  # about a second each to parse and check, on a thread
            refused(heavy + "ttl: never\n", count, within=30)
        assert server.alive() and "Traceback" not in server.log_text()
        config.write_text("log-level: debug\n")
        server.process.send_signal(signal.SIGHUP)
        wait(lambda: "reload applied: log_level" in server.log_text(), 10, "a good reload after the bad ones")
    finally:
        loop.stop()
        assert server.stop() == 0, server.log_text()
    assert loop.asked > 20 and loop.wrong == [], loop.wrong[:5]


# -- one source for defaults (issue 18, point 6) ------------------------------------------------


def _defaults(command: str, flags: tuple[str, ...] | list[str] = ()) -> ServeConfig:
    """The configuration of `kdns <command>` given `flags` and no other (node-cache's one
    required flag aside)."""
    argv = [command, *flags] if command == "serve" else [command, "--cluster-dns", "10.96.0.10", *flags]
    parser = cli._parser()
    args = parser.parse_args(argv)
    settings = cli._serve_settings(parser, argv, args, {}, command)
    return cli._checked_serve_config(settings) if command == "serve" else cli._node_cache_config(settings)


def test_every_flag_of_serve_defaults_to_the_config_records_own() -> None:
    """Defaults live in kdns/config.py (and kdns/core/budgets.py); the command line repeats none."""
    defaults = _defaults("serve")
    for field in dataclasses.fields(ServeConfig):
        if field.default is not dataclasses.MISSING:
            assert getattr(defaults, field.name) == field.default, field.name
    assert defaults.tcp == TcpLimits()
    assert defaults.watch == WatchOptions()
    assert defaults.forward.options == ForwardOptions()
    assert defaults.listen == (SocketAddress.parse(config.DEFAULT_LISTEN, "--listen"),)
    assert (defaults.cluster_domain, defaults.pod_mode, defaults.ttl, defaults.max_udp) == (
        config.DEFAULT_CLUSTER_DOMAIN,
        config.DEFAULT_POD_MODE,
        config.DEFAULT_TTL,
        DEFAULT_MAX_UDP,
    )
    forward = defaults.forward
    assert (forward.cache_size, forward.serve_stale, forward.prefetch) == (
        config.DEFAULT_CACHE_SIZE,
        config.DEFAULT_SERVE_STALE,
        False,
    )
    for field in dataclasses.fields(ForwardConfig):
        if field.default is not dataclasses.MISSING:
            assert getattr(forward, field.name) == field.default, field.name
    assert defaults.ops == OpsListeners(
        health=SocketAddress.parse(config.DEFAULT_HEALTH_LISTEN, "--health-listen"),
        ready=SocketAddress.parse(config.DEFAULT_READY_LISTEN, "--ready-listen"),
        metrics=SocketAddress.parse(config.DEFAULT_METRICS_LISTEN, "--metrics-listen"),
    )


def test_workers_share_the_byte_budgets_of_the_stores_each_keeps_so_the_flags_bound_the_instance() -> None:
    """Unbound's rule: one budget for the server, whatever the threads (`config.worker_share`)."""
    settings = ["--reply-cache-bytes", "16Mi", "--cache-bytes", "32Mi", "--tcp-buffer-bytes", "1Mi"]
    alone = _defaults("serve", settings)
    assert config.worker_share(alone) is alone
    four = config.worker_share(dataclasses.replace(alone, workers=4))
    assert four.reply_cache_bytes * 4 == alone.reply_cache_bytes
    assert four.forward.cache_bytes * 4 == alone.forward.cache_bytes
    assert four.forward.denial_cache_bytes * 4 == alone.forward.denial_cache_bytes
    assert four.tcp.buffer_bytes * 4 == alone.tcp.buffer_bytes
    # What bounds work per event loop stays each worker's; the TCP buffers never go below the
    # room for a whole largest query and a batch of replies.
    assert (four.tcp.max_connections, four.forward.cache_size) == (alone.tcp.max_connections, alone.forward.cache_size)
    many = config.worker_share(dataclasses.replace(alone, workers=64))
    assert many.tcp.buffer_bytes == config.TCP_BUFFER_LOWEST
    assert many.reply_cache_bytes == alone.reply_cache_bytes // 64


def test_every_flag_of_node_cache_defaults_to_the_config_records_own() -> None:
    defaults = _defaults("node-cache")
    assert defaults.tcp == TcpLimits()
    assert defaults.max_udp == DEFAULT_MAX_UDP and defaults.lameduck == config.DEFAULT_LAMEDUCK
    assert defaults.reply_cache_bytes == budgets.REPLY_CACHE_BYTES
    forward = defaults.forward
    success, denial = config.NODE_CACHE_SUCCESS, config.NODE_CACHE_DENIAL
    assert forward.options == ForwardOptions(max_ttl=success[1], max_negative_ttl=denial[1])
    assert (forward.cache_size, forward.denial_cache_size) == (success[0], denial[0])
    assert (forward.cache_bytes, forward.denial_cache_bytes) == (
        budgets.FORWARD_CACHE_BYTES,
        budgets.DENIAL_CACHE_BYTES,
    )
    assert forward.serve_stale == config.duration("--serve-stale", config.NODE_CACHE_SERVE_STALE)


def test_a_bare_port_listens_on_both_families_as_corednss_dot_53_does() -> None:
    """`--listen :53` (the manifests' choice): 0.0.0.0:53 and [::]:53 where the host has IPv6,
    0.0.0.0:53 alone where it has none; an operations listener `:8080` is one dual-stack socket."""
    both = listen_addresses([":53", "127.0.0.1:5353"], "--listen", lambda: True)
    assert both == (SocketAddress("0.0.0.0", 53), SocketAddress("::", 53), SocketAddress("127.0.0.1", 5353))
    assert listen_addresses([":53"], "--listen", lambda: False) == (SocketAddress("0.0.0.0", 53),)
    assert config.ops_address("--health-listen", ":8080", lambda: True) == SocketAddress("::", 8080)
    assert config.ops_address("--health-listen", ":8080", lambda: False) == SocketAddress("0.0.0.0", 8080)
    with pytest.raises(KdnsError, match="--listen ':x'"):
        listen_addresses([":x"], "--listen", lambda: True)
