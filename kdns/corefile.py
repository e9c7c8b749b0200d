"""The Corefile language, read as CoreDNS reads it (its vendored Caddy v1 `caddyfile` package).

- Tokens are separated by white space; `"..."` quotes one (a `\\"` inside is a quote, any other
  backslash stays); an unquoted `#` starts a comment to the end of the line, even inside a token.
- A server block is its keys (`.`, `cluster.local:53`, `dns://.:53`; several on the first line,
  or continued on the next after a trailing comma), then `{`, its directives, `}`. A block
  without braces runs to the end of the file.
- A directive is its name and the tokens on its line; a `{` on it opens a nested block whose
  tokens, across lines, belong to it, to the matching `}`.
- `(name) { ... }` defines a snippet; `import name` puts its tokens where it stands; `import
  PATTERN` puts there the tokens of the files matching it (relative to the file it is in; a
  pattern with a wildcard may match nothing; a plain path must exist). Imports nest, within
  limits (a file importing itself is an error, not a hang).
- `{$NAME}` and `{%NAME%}` in a token are replaced by the environment variable (empty if unset).

Every error names the file and the line. What the directives mean is `kdns.corefile_config`'s.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kdns.errors import KdnsError

MAX_SNIPPET_EXPANSIONS = 10_000  # CoreDNS's (caddyfile maxSnippetExpansions)
MAX_FILE_EXPANSIONS = 1_000  # files imported in one parse (CoreDNS allows 100,000; a loop is the usual cause)
MAX_FILE_BYTES = 1 << 20  # a Corefile or an imported file, as a ConfigMap holds at most


class CorefileError(KdnsError):
    """A Corefile that cannot be read, naming the file and the line."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive: its name, the arguments on its line, and its nested block's directives."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def error(self, problem: str) -> CorefileError:
        return CorefileError(f"{self.where}: {self.name}: {problem}")


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """A server block: its keys as written (`.:53`), and its directives in order."""

    keys: tuple[str, ...]
    directives: tuple[Directive, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def tokens(text: str, file: str) -> list[Token]:
    """The tokens of `text` (a Corefile or a file it imports), as Caddy v1's lexer makes them."""
    found: list[Token] = []
    value: list[str] = []
    line = 1
    start = 1
    quoted = escaped = comment = False
    if text.startswith("\ufeff"):
        text = text[1:]
    for char in text:
        if quoted:
            if not escaped:
                if char == "\\":
                    escaped = True
                    continue
                if char == '"':
                    quoted = False
                    found.append(Token("".join(value), file, start))
                    value = []
                    continue
            if char == "\n":
                line += 1
            if escaped and char != '"':
                value.append("\\")
            value.append(char)
            escaped = False
            continue
        if char.isspace():
            if char == "\n":
                line += 1
                comment = False
            if value:
                found.append(Token("".join(value), file, start))
                value = []
            continue
        if char == "#":
            comment = True
        if comment:
            continue
        if not value:
            start = line
            if char == '"':
                quoted = True
                continue
        value.append(char)
    if quoted:
        raise CorefileError(f"{file}:{start}: a quoted token is not closed")
    if value:
        found.append(Token("".join(value), file, start))
    return found


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """`{$NAME}` and `{%NAME%}` replaced by the variable's value (empty when it is unset)."""
    for opening, closing in (("{%", "%}"), ("{$", "}")):
        at = text.find(opening)
        while at != -1:
            end = text.find(closing, at + len(opening))
            if end == -1 or end == at + len(opening):
                break
            text = text[:at] + environ.get(text[at + len(opening) : end], "") + text[end + len(closing) :]
            at = text.find(opening, at)
    return text


@dataclass
class _Parser:
    tokens: list[Token]
    environ: Mapping[str, str]
    at: int = 0
    snippets: dict[str, list[Token]] = field(default_factory=dict)
    snippet_expansions: int = 0
    file_expansions: int = 0

    # -- the token stream -------------------------------------------------------------------

    def peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def on_new_line(self) -> bool:
        """Whether the token at the cursor starts a line (its file or line differs from the one
        before it)."""
        if self.at == 0 or self.at >= len(self.tokens):
            return True
        before, now = self.tokens[self.at - 1], self.tokens[self.at]
        return before.file != now.file or before.line != now.line

    # -- the grammar -----------------------------------------------------------------------------

    def blocks(self) -> list[ServerBlock]:
        found = []
        while self.peek() is not None:
            block = self.block()
            if block is not None:
                found.append(block)
        return found

    def block(self) -> ServerBlock | None:
        first = self.peek()
        assert first is not None
        keys: list[str] = []
        expecting_another = False
        while True:
            token = self.peek()
            if token is None:
                if expecting_another:
                    raise CorefileError(f"{first.where}: a server address ends with a comma and nothing follows")
                break
            text = substitute(token.text, self.environ)
            if text == "import" and self.on_new_line() and not keys:
                self.import_here()
                continue
            if text == "{":
                if expecting_another:
                    raise CorefileError(f"{token.where}: expected another server address after the comma")
                break
            if text == "}":
                raise CorefileError(f"{token.where}: '}}' with no block open")
            if keys and not expecting_another and self.on_new_line():
                break
            self.take()
            if text:
                expecting_another = text.endswith(",")
                keys.append(text.rstrip(","))
        if not keys:
            return None
        if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")"):
            self.define_snippet(keys[0][1:-1], first)
            return None
        braced = self.peek() is not None and self.peek().text == "{"  # type: ignore[union-attr]
        if braced:
            self.take()
        directives = self.directives(closing=braced, opened_at=first)
        return ServerBlock(tuple(keys), tuple(directives), first.file, first.line)

    def define_snippet(self, name: str, where: Token) -> None:
        if name in self.snippets:
            raise CorefileError(f"{where.where}: snippet {name} is declared twice")
        token = self.peek()
        if token is None or token.text != "{":
            raise CorefileError(f"{where.where}: snippet ({name}) needs a {{ ... }} block")
        self.take()
        depth, body = 1, []
        while True:
            token = self.peek()
            if token is None:
                raise CorefileError(f"{where.where}: snippet ({name}) is not closed")
            self.take()
            if token.text == "{":
                depth += 1
            elif token.text == "}":
                depth -= 1
                if depth == 0:
                    break
            body.append(token)
        self.snippets[name] = body

    def directives(self, closing: bool, opened_at: Token) -> list[Directive]:
        found: list[Directive] = []
        while True:
            token = self.peek()
            if token is None:
                if closing:
                    raise CorefileError(f"{opened_at.where}: the block opened here is not closed")
                return found
            if token.text == "}":
                self.take()
                if not closing:
                    raise CorefileError(f"{token.where}: '}}' with no block open")
                return found
            if substitute(token.text, self.environ) == "import":
                self.import_here()
                continue
            found.append(self.directive())

    def directive(self) -> Directive:
        name = self.take()
        args: list[str] = []
        block: list[Directive] = []
        while (token := self.peek()) is not None and not self.on_new_line():
            self.take()
            if token.text == "{":
                block = self.directives(closing=True, opened_at=token)
                break
            if token.text == "}":
                self.at -= 1  # closes the block this directive is in (`health { lameduck 5s }`)
                break
            args.append(substitute(token.text, self.environ))
        return Directive(substitute(name.text, self.environ), tuple(args), tuple(block), name.file, name.line)

    def import_here(self) -> None:
        """Replace `import ARG` at the cursor with the tokens it names."""
        token = self.take()
        argument = self.peek()
        if argument is None or self.on_new_line():
            raise CorefileError(f"{token.where}: import needs a file, a glob pattern or a snippet name")
        self.take()
        if self.peek() is not None and not self.on_new_line():
            raise CorefileError(f"{token.where}: import takes one argument")
        pattern = substitute(argument.text, self.environ)
        if pattern in self.snippets:
            self.snippet_expansions += 1
            if self.snippet_expansions > MAX_SNIPPET_EXPANSIONS:
                raise CorefileError(f"{token.where}: more than {MAX_SNIPPET_EXPANSIONS} snippet imports (a loop?)")
            imported = self.snippets[pattern]
        else:
            imported = list(self.files(pattern, token))
        self.tokens[self.at : self.at] = imported

    def files(self, pattern: str, token: Token) -> Iterator[Token]:
        here = os.path.dirname(os.path.abspath(token.file))
        path = pattern if os.path.isabs(pattern) else os.path.join(here, pattern)
        wildcard = any(char in path for char in "*?[")
        matches = sorted(glob.glob(path)) if wildcard else ([path] if os.path.exists(path) else [])
        if not matches and not wildcard:
            raise CorefileError(f"{token.where}: import: no file {pattern}")
        for match in matches:
            self.file_expansions += 1
            if self.file_expansions > MAX_FILE_EXPANSIONS:
                raise CorefileError(f"{token.where}: import: more than {MAX_FILE_EXPANSIONS} files (a loop?)")
            yield from tokens(read(Path(match), token.where), os.path.abspath(match))


def read(path: Path, imported_at: str | None = None) -> str:
    """A Corefile's text (at most MAX_FILE_BYTES, UTF-8)."""
    where = f"{imported_at}: import: " if imported_at else ""
    try:
        if path.is_dir():
            raise CorefileError(f"{where}{path}: is a directory")
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise CorefileError(f"{where}{path}: cannot read it: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CorefileError(f"{where}{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorefileError(f"{where}{path}: not UTF-8 ({error.reason} at byte {error.start})") from None


def parse(text: str, file: str, environ: Mapping[str, str] | None = None) -> list[ServerBlock]:
    """The server blocks of a Corefile's `text` (read from `file`, which imports are relative
    to), snippets and imports expanded, environment variables substituted."""
    parser = _Parser(tokens(text, file), os.environ if environ is None else environ)
    return parser.blocks()


def load(path: Path, environ: Mapping[str, str] | None = None) -> list[ServerBlock]:
    """The server blocks of the Corefile at `path`."""
    return parse(read(path), str(path), environ)


def fingerprint(path: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A digest of what the Corefile at `path` says, every file it imports included (an edit of
    one of them changes it), or of why it cannot be read: how `reload` notices a change (CoreDNS
    hashes the Corefile it parsed, imports expanded). `max_bytes` is for the same signature as a
    YAML file's fingerprint: a Corefile's files are bounded by MAX_FILE_BYTES each."""
    try:
        said = repr(load(Path(path)))
    except KdnsError as error:
        said = f"error: {error}"
    return hashlib.sha256(said.encode()).hexdigest()
