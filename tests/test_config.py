"""Settings from a YAML file, `KDNS_*` variables and flags (flags win over the environment, the
environment over the file), errors naming the key, and reload on SIGHUP and on a file swapped
as a ConfigMap update swaps it, with no failed query."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import yaml

from kdns import cli
from kdns.config import ServeConfig
from kdns.errors import KdnsError
from tests.helpers import QueryLoop, wait
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
        # SIGHUP with a changed file: the log level applies at once, the TTL at the next restart.
        _write(first / "kdns.yaml", {"log-level": "debug", "ttl": 60})
        server.process.send_signal(signal.SIGHUP)
        wait(lambda: "reload applied: log_level" in server.log_text(), 5, "SIGHUP reload")
        assert "ttl changed; applied at the next restart" in server.log_text()
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
