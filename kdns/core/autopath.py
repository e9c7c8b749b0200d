"""Server-side search paths (`--autopath`): CoreDNS's `autopath @kubernetes`.

A pod's resolv.conf has `search <ns>.svc.<domain> svc.<domain> <domain> <node's domains>` and
`ndots:5`, so a client asking `api.example.com` first asks `api.example.com.<ns>.svc.<domain>`,
and walks the list one NXDOMAIN at a time: four or five queries, twice with A and AAAA. With
autopath, kdns walks the list itself on the first query and answers it with a CNAME from the
name asked to the first name that exists, then that name's records (CoreDNS's `cnamer`).

It applies only to a query from a known Pod's address (the Pod index gives its namespace, which
is the first search element) for a name in that first element that does not exist. A client
that is not a known Pod gets the ordinary answer. On any failure the ordinary NXDOMAIN is sent
back, and the client walks its list itself (CoreDNS: "on any failures, the original reply is
returned").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdns.core import chase
from kdns.core.message import NOERROR, NXDOMAIN, RCODE_MASK
from kdns.core.names import at_label_boundary, label_wire
from kdns.core.stage import Next, Outcome, Reply, ReplyOptions, Request, then_reply

# Every record of an autopath reply is served with at most this TTL: the CNAME depends on the
# client's namespace and the walk on the names that exist now, so no cache should hold it long
# (CoreDNS's kubernetes plugin serves its records with a 5 s TTL by default, which its autopath
# answers carry).
AUTOPATH_TTL = 5


@dataclass(frozen=True, slots=True)
class Autopath:
    """What the walk needs: the cluster domain and kdns's own search domains (wire form, the
    root label included), and the namespace of the Pod at a client address (None when no Pod,
    or Pods of several namespaces, have it)."""

    domain: bytes
    search: tuple[bytes, ...]
    namespace_of: Callable[[str], str | None]

    def candidates(self, key: bytes, client_host: str) -> tuple[bytes, ...]:
        """The names to try, in order, for `key` asked by `client_host`; none when autopath does
        not apply. The name asked is the first element of the client's search path: it is not
        tried again."""
        namespace = self.namespace_of(client_host)
        if namespace is None:
            return ()
        first = label_wire(namespace) + b"\x03svc" + self.domain
        cut = len(key) - len(first)
        if cut <= 0 or not key.endswith(first) or not at_label_boundary(key, cut):
            return ()
        base = key[:cut]
        return (base + b"\x03svc" + self.domain, base + self.domain, *(base + s for s in self.search), base + b"\x00")


class AutopathStage:
    """In front of the cluster zone: a query from a Pod for a name of its own namespace that does
    not exist is answered from the Pod's search path (CoreDNS's `autopath @kubernetes`). Each
    name of the path is asked of the block that holds it (`resolve`): cluster names at once,
    others through the forward cache or upstream. NXDOMAIN goes on to the next name; the first
    that exists answers, with a CNAME from the name asked (`on_success` is told); any failure
    ends the walk with the ordinary NXDOMAIN, and the client walks its list itself. An NXDOMAIN
    is never kept by the reply cache here: it depends on who asks."""

    def __init__(
        self,
        autopath: Autopath,
        options: ReplyOptions,
        synced: Callable[[], bool],
        resolve: Next,
        on_success: Callable[[], None],
    ) -> None:
        self.autopath = autopath
        self._options = options
        self._synced = synced
        self._resolve = resolve
        self._on_success = on_success

    def serve(self, request: Request, next: Next) -> Outcome:
        outcome = next(request)
        if not isinstance(outcome, Reply) or outcome.message[3] & RCODE_MASK != NXDOMAIN:
            return outcome
        ordinary = outcome._replace(keep=None)
        client = request.client
        if client is None or not self._synced():
            return ordinary
        return self._walk(request, self.autopath.candidates(request.query.key, client[0]), ordinary)

    def _walk(self, request: Request, candidates: tuple[bytes, ...], ordinary: Reply) -> Outcome:
        if not candidates:
            return ordinary
        inner = request.asking(candidates[0])._replace(client=None)  # no Pod of its own: not walked again
        rest = candidates[1:]
        return then_reply(self._resolve(inner), lambda found: self._found(request, inner, found, rest, ordinary))

    def _found(
        self, request: Request, inner: Request, found: Reply, rest: tuple[bytes, ...], ordinary: Reply
    ) -> Outcome:
        rcode = found.message[3] & RCODE_MASK
        if rcode == NXDOMAIN:
            return self._walk(request, rest, ordinary)
        if rcode != NOERROR:
            return ordinary  # a failure (SERVFAIL, REFUSED): the client walks its list itself
        self._on_success()
        message = chase.compose_reply(
            request.query, inner.query, AUTOPATH_TTL, found.message, request.tcp, self._options, max_ttl=AUTOPATH_TTL
        )
        return Reply(message)
