"""The Corefile language (kdns/corefile.py), as CoreDNS's Caddy v1 parser reads it: server blocks
and their keys, directives and nested blocks, quoting and comments, snippets, imports of files
and globs, environment variables; and every error naming the file and the line (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdns.corefile import CorefileError, Directive, load, parse, tokens
from tests.process import KUBEADM_COREFILE

KUBEADM = KUBEADM_COREFILE.read_text()


def _names(directives: tuple[Directive, ...]) -> list[str]:
    return [directive.name for directive in directives]


def test_kubeadms_corefile() -> None:
    (block,) = parse(KUBEADM, "Corefile")
    assert block.keys == (".:53",) and block.where == "Corefile:1"
    assert _names(block.directives) == [
        "errors",
        "health",
        "ready",
        "kubernetes",
        "prometheus",
        "forward",
        "cache",
        "loop",
        "reload",
        "loadbalance",
    ]
    health, _, kubernetes = block.directives[1:4]
    assert health.block[0] == Directive("lameduck", ("5s",), (), "Corefile", 4)
    assert kubernetes.args == ("cluster.local", "in-addr.arpa", "ip6.arpa") and kubernetes.line == 7
    assert [(d.name, d.args) for d in kubernetes.block] == [
        ("pods", ("insecure",)),
        ("fallthrough", ("in-addr.arpa", "ip6.arpa")),
        ("ttl", ("30",)),
    ]


def test_tokens_quotes_comments_and_lines() -> None:
    text = 'a "b c" d#e f\n"multi\nline" \\"x" "q\\"uote" "back\\slash"\n# only a comment\ng'
    assert [(t.text, t.line) for t in tokens(text, "f")] == [
        ("a", 1),
        ("b c", 1),
        ("d", 1),
        ("multi\nline", 2),
        ('\\"x"', 3),
        ('q"uote', 3),
        ("back\\slash", 3),
        ("g", 5),
    ]


def test_several_keys_commas_one_line_blocks_and_blocks_sharing_a_port() -> None:
    blocks = parse(
        "example.org org:1053 {\n whoami\n}\na.test,\n b.test:1053 { log }\n. { health { lameduck 5s } }\n",
        "Corefile",
    )
    assert [block.keys for block in blocks] == [("example.org", "org:1053"), ("a.test", "b.test:1053"), (".",)]
    assert blocks[1].directives[0].name == "log"
    assert blocks[2].directives[0].block[0].args == ("5s",)


def test_snippets_and_environment_variables() -> None:
    text = "(common) {\n  errors\n  log\n}\n{$ZONE}:{$PORT} {\n  import common\n  forward . {%UP%}\n  whoami\n}\n"
    (block,) = parse(text, "Corefile", {"ZONE": "example.org", "PORT": "1053", "UP": "10.0.0.2"})
    assert block.keys == ("example.org:1053",)
    assert [(d.name, d.args) for d in block.directives] == [
        ("errors", ()),
        ("log", ()),
        ("forward", (".", "10.0.0.2")),
        ("whoami", ()),
    ]


def test_imports_of_files_and_globs_relative_to_the_corefile(tmp_path: Path) -> None:
    """k3s's and AKS's coredns-custom: `import custom/*.override` inside the main block, `import
    custom/*.server` for blocks of their own; a glob matching nothing is fine."""
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "a.override").write_text("log\n")
    (tmp_path / "custom" / "b.override").write_text("# nothing but a comment\n")
    (tmp_path / "custom" / "stub.server").write_text("consul.test:53 {\n  forward . 10.0.0.9\n}\n")
    (tmp_path / "Corefile").write_text(
        ".:53 {\n  errors\n  import custom/*.override\n  import missing/*.override\n}\nimport custom/*.server\n"
    )
    blocks = load(tmp_path / "Corefile")
    assert [block.keys for block in blocks] == [(".:53",), ("consul.test:53",)]
    assert _names(blocks[0].directives) == ["errors", "log"]
    forward = blocks[1].directives[0]
    assert forward.args == (".", "10.0.0.9") and forward.where == f"{tmp_path / 'custom' / 'stub.server'}:2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".:53 {\n  errors\n", "Corefile:1: the block opened here is not closed"),
        (".:53 {\n  errors\n}\n}\n", "Corefile:4: '}' with no block open"),
        (".:53 {\n  cache 30 {\n    success 100\n}\n", "Corefile:1: the block opened here is not closed"),
        ('.:53 {\n  log "unclosed\n}\n', "Corefile:2: a quoted token is not closed"),
        (".:53 {\n  import\n}\n", "Corefile:2: import needs a file"),
        (".:53 {\n  import a b\n}\n", "Corefile:2: import takes one argument"),
        (".:53 {\n  import nothere.conf\n}\n", "Corefile:2: import: no file nothere.conf"),
        ("a.test, {\n}\n", "Corefile:1: expected another server address"),
        ("(s) {\n log\n}\n(s) {\n log\n}\n", "Corefile:4: snippet s is declared twice"),
        ("(s)\n", "Corefile:1: snippet (s) needs a { ... } block"),
    ],
)
def test_broken_corefiles_are_refused_naming_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "Corefile"
    path.write_text(text)
    with pytest.raises(CorefileError) as raised:
        load(path)
    assert message.replace("Corefile", str(path), 1) in str(raised.value)


def test_an_import_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "Corefile").write_text(".:53 {\n  import Corefile.part\n}\n")
    (tmp_path / "Corefile.part").write_text("import Corefile.part\n")
    with pytest.raises(CorefileError, match="more than 1000 files"):
        load(tmp_path / "Corefile")
    (tmp_path / "Snippets").write_text("(a) {\n  import a\n}\n. {\n  import a\n}\n")
    with pytest.raises(CorefileError, match="more than 10000 snippet imports"):
        load(tmp_path / "Snippets")


def test_unreadable_files_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(CorefileError, match="cannot read it"):
        load(tmp_path / "none")
    (tmp_path / "binary").write_bytes(b".:53 {\n \xff\xfe\n}\n")
    with pytest.raises(CorefileError, match="not UTF-8"):
        load(tmp_path / "binary")
    (tmp_path / "big").write_text("# " + "x" * (1 << 20))
    with pytest.raises(CorefileError, match="larger than"):
        load(tmp_path / "big")
