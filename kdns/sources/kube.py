"""Following a live cluster through the official `kubernetes` client: list, then watch.

One watcher per resource (and per namespace with `--namespaces`) runs the blocking client in a
worker thread. It lists (paged), hands the list to the trio side to reconcile against what the
store holds, then watches from the list's resourceVersion with bookmarks, resuming from the last
version seen whenever a watch ends. A 410 Gone (history compacted) leads to a fresh list; any other
failure to backoff with jitter, logged once per outage. The store is never emptied: while the API
is away, the zone answers with what it last knew.

Objects are read as plain JSON (`_preload_content=False`, `deserialize=False`): no client model
classes are built, and API dicts go straight to `kdns.core.convert`.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from kdns.config import WatchOptions
from kdns.core.convert import ConversionError, ObjectKey, change_time, convert, object_key
from kdns.core.counters import ProgrammingDurations
from kdns.core.model import ClusterObject, EndpointSlice, Kind, Service, ServiceType
from kdns.core.store import ClusterStore, bulk_change
from kdns.errors import KdnsError
from kdns.state import State, WatchCounters

log = logging.getLogger(__name__)
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # failures are reported here, once

GONE = 410
# Seconds a first sync may hold back publishing Services (`ClusterStore.hold`) while waiting for
# every watcher to list once: past it (a resource the API keeps refusing), what is listed is
# served, not ready, as before any hold.
HOLD_LIMIT = 30.0


@dataclass(frozen=True, slots=True)
class Resource:
    """One kind kdns lists and watches: its API group version and plural, and whether it lives in
    namespaces (the paths are the API's: /api/v1/services, /apis/discovery.k8s.io/v1/...)."""

    kind: Kind
    api_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{root}/namespaces/{namespace}/{self.plural}" if namespace else f"{root}/{self.plural}"


RESOURCES = {
    Kind.NAMESPACE: Resource(Kind.NAMESPACE, "v1", "namespaces", False),
    Kind.SERVICE: Resource(Kind.SERVICE, "v1", "services", True),
    Kind.ENDPOINT_SLICE: Resource(Kind.ENDPOINT_SLICE, "discovery.k8s.io/v1", "endpointslices", True),
    Kind.POD: Resource(Kind.POD, "v1", "pods", True),
}


class ListCall:
    """A list (or watch) request for one resource in one scope, made through the client's
    `ApiClient` (its configuration, authentication, TLS and connection pool) but not its generated
    API classes: importing `CoreV1Api` and `DiscoveryV1Api` cost 0.8 s and 22 MB at start, for
    four GET requests whose raw JSON kdns reads itself anyway. Returns the unread urllib3
    response; a non-2xx answer raises `ApiException`, as the generated methods do."""

    def __init__(self, api_client: client.ApiClient, path: str, label_selector: str = "") -> None:
        self.api_client = api_client
        self.path = path
        self.label_selector = label_selector

    def __call__(
        self,
        *,
        limit: int | None = None,
        _continue: str | None = None,
        watch: bool = False,
        resource_version: str | None = None,
        allow_watch_bookmarks: bool = False,
        timeout_seconds: int | None = None,
        _request_timeout: Any = None,
        _preload_content: bool = False,
    ) -> Any:
        query: list[tuple[str, Any]] = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        for name, value in (
            ("limit", limit),
            ("continue", _continue),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", timeout_seconds),
        ):
            if value is not None:
                query.append((name, value))
        if watch:
            query.append(("watch", True))
        if allow_watch_bookmarks:
            query.append(("allowWatchBookmarks", True))
        request = self.api_client.param_serialize(
            "GET",
            self.path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*request, _request_timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response


def load_api_client(kubeconfig: str | None, context: str | None, endpoint: str | None = None) -> client.ApiClient:
    """A client for the cluster: in-cluster configuration inside a pod, else a kubeconfig file
    (`--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`). Errors name what was read.

    With `endpoint` and no kubeconfig (CoreDNS's `endpoint URL`), that URL is asked, without
    credentials and not from inside the cluster (`kubectl proxy`, say), as CoreDNS's
    getClientConfig does; a kubeconfig wins over it there, and here."""
    if endpoint is not None and kubeconfig is None:
        bare = client.Configuration()
        bare.retries = False
        bare.host = endpoint
        return client.ApiClient(bare)
    configuration = client.Configuration()
    # Retrying is the watchers' job (backoff with jitter, one log line per outage): urllib3's own
    # retries would only add delay and a warning per attempt.
    configuration.retries = False
    if kubeconfig is None and "KUBECONFIG" not in os.environ and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as error:
            raise KdnsError(f"in-cluster configuration (KUBERNETES_SERVICE_HOST is set): {error}") from None
        return client.ApiClient(configuration)
    if kubeconfig is not None:
        source, path = "--kubeconfig", kubeconfig
    elif "KUBECONFIG" in os.environ:
        source, path = "KUBECONFIG", os.environ["KUBECONFIG"]
    else:
        source, path = "default kubeconfig", str(Path("~/.kube/config").expanduser())
    files = [part for part in path.split(os.pathsep) if part]
    if not files or not any(Path(part).is_file() for part in files):
        raise KdnsError(f"{source} {path}: no such file (give --kubeconfig PATH, or run kdns in a pod)")
    try:
        config.load_kube_config(
            config_file=path if source != "KUBECONFIG" else None, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError, ValueError, TypeError, AttributeError) as error:
        raise KdnsError(f"{source} {path}: cannot use it: {error}") from None
    return client.ApiClient(configuration)


def _resource_version(raw: Any) -> str | None:
    metadata = raw.get("metadata") if isinstance(raw, Mapping) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) and version else None


class Applier:
    """Applies what the watchers saw to the store (on the trio side, one change at a time)."""

    def __init__(
        self,
        store: ClusterStore,
        options: WatchOptions,
        clock: Callable[[], float] = time.time,
        programming: ProgrammingDurations | None = None,
    ) -> None:
        self.store = store
        self.allowed = set(options.namespaces)
        self.clock = clock  # Unix time: serials, and programming latency against the API's times
        self.programming = programming
        self.errors = 0  # objects that could not be applied (beyond conversion errors)

    def _in_scope(self, kind: Kind, key: tuple[str, str]) -> bool:
        namespace = key[1] if kind == Kind.NAMESPACE else key[0]
        return not self.allowed or namespace in self.allowed

    @staticmethod
    def prepare(kind: Kind, raw: Any) -> Prepared:
        """Convert one API object, touching nothing shared: done in the thread that read it, so
        that a page of 500 objects is never converted on the event loop that answers queries."""
        key = object_key(kind, raw)
        if key is None:
            return Prepared(None, None, None)
        changed_at = change_time(kind, raw)
        declared = raw.get("kind")
        if declared is not None and declared != kind:
            # The API server never sends another kind on a watch: whatever this is, it is not
            # one of the objects this watch follows.
            return Prepared(key, None, ConversionError(kind, "/".join(key), "kind", f"{declared!r} on a {kind} watch"))
        try:
            return Prepared(key, convert(kind, raw), None, changed_at)
        except ConversionError as error:
            return Prepared(key, None, error)
        except Exception as error:  # a converter bug: contained to this object
            problem = f"could not be converted: {type(error).__name__}: {error}"
            return Prepared(key, None, ConversionError(kind, "/".join(key), "(object)", problem))

    def event(self, kind: Kind | str, event_type: str, raw: Any) -> bool:
        """Convert and apply one watch event (`prepare`, then `apply_event`)."""
        return self.apply_event(Kind(kind), event_type, self.prepare(Kind(kind), raw))

    def apply_event(self, kind: Kind, event_type: str, prepared: Prepared) -> bool:
        """Apply one converted watch event; False when it changed nothing (out of scope,
        unreadable, or the same as what is served)."""
        key = prepared.key
        if key is None:
            log.warning("%s %s event without a readable name: ignored", kind, event_type)
            return False
        if not self._in_scope(kind, key):
            return False
        if event_type == "DELETED":
            self.store.delete(kind, key)
        elif not self._guarded_apply(kind, prepared):
            return False
        now = self.clock()
        self.store.bump_serial(int(now))
        if event_type != "DELETED":
            self._programmed(kind, event_type, prepared, now)
        return True

    def _programmed(self, kind: Kind, event_type: str, prepared: Prepared, now: float) -> None:
        """Count a watched change's programming latency, now that its answers are served (the
        zone's prepared answers changed as it was applied). Only watch events count: a list holds
        old changes, which CoreDNS does not count either."""
        converted = prepared.converted
        if self.programming is None or prepared.changed_at is None or converted is None:
            return
        if isinstance(converted, Service):
            if event_type != "ADDED":
                return  # a Service's creation time says nothing of when a later change happened
            service: ClusterObject | None = converted
        elif isinstance(converted, EndpointSlice):
            service = self.store.get(Kind.SERVICE, converted.service_key)
        else:
            return
        if isinstance(service, Service):  # a slice of an unknown Service serves nothing yet
            self.programming.observe(service_kind(service), now - prepared.changed_at)

    def reconcile(self, kind: Kind | str, namespace: str | None, items: Sequence[Any]) -> None:
        """Make the store's objects of `kind` (in `namespace`) those of a fresh list: adds, updates
        and deletes computed by difference, so no name that still exists ever goes missing."""
        kind = Kind(kind)
        listed: set[tuple[str, str]] = set()
        self.apply_listed(kind, [self.prepare(kind, raw) for raw in items], listed)
        self.remove_unlisted(kind, namespace, listed)

    def apply_listed(self, kind: Kind, page: Sequence[Prepared], listed: set[tuple[str, str]]) -> None:
        """Add or update the (converted) objects of one page of a list, and note their keys in
        `listed`.

        Pages are applied as they arrive, so a relist never holds the whole cluster twice (a
        known cause of cluster DNS memory doubling after an API server restart)."""
        with bulk_change():
            for prepared in page:
                key = prepared.key
                if key is None or not self._in_scope(kind, key):
                    continue
                listed.add(key)  # listed even if it cannot be applied: what was served stays
                self._guarded_apply(kind, prepared)

    def remove_unlisted(self, kind: Kind, namespace: str | None, listed: set[tuple[str, str]]) -> None:
        """After a list's last page: delete what the list did not hold."""
        with bulk_change():
            for key in self.store.keys(kind, namespace):
                if key not in listed:
                    self.store.delete(kind, key)
        self.store.bump_serial(int(self.clock()))

    def _guarded_apply(self, kind: Kind, prepared: Prepared) -> bool:
        """`_apply`, with any failure logged and contained: nothing about one object may stop
        the rest of a list page, or leave the others to be deleted as unlisted."""
        try:
            return self._apply(kind, prepared)
        except Exception as error:
            self.errors += 1
            log.exception("could not apply %s %s (%s): keeping what was served for it", kind, prepared.key, error)
            return False

    def _apply(self, kind: Kind, prepared: Prepared) -> bool:
        assert prepared.key is not None
        if prepared.error is not None:
            # Keep the last good version: bad input must not lose what was being served.
            self.errors += 1
            log.error("skipped %s (keeping what was served for it before)", prepared.error)
            return False
        converted = prepared.converted
        if converted is None:
            self.store.delete(kind, prepared.key)  # e.g. a slice that lost its service label
        elif self.store.get(kind, prepared.key) != converted:
            self.store.upsert(converted)
        else:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Prepared:
    """An API object converted off the event loop: its key (None if it has no readable name), and
    the model object (None when DNS has no use for it) or why it could not be converted."""

    key: ObjectKey | None
    converted: ClusterObject | None
    error: ConversionError | None
    changed_at: float | None = None  # when the change happened in the cluster (`change_time`)


def service_kind(service: Service) -> str:
    """A Service's kind as programming latency is labelled: CoreDNS's `service_kind` values, and
    `external_name`, which CoreDNS does not measure."""
    if service.type is ServiceType.CLUSTER_IP:
        return "cluster_ip"
    if service.type is ServiceType.EXTERNAL_NAME:
        return "external_name"
    return "headless_with_selector" if service.has_selector else "headless_without_selector"


class MalformedEvent(ValueError):
    """A watch stream line that is not a watch event: the stream cannot be trusted past it."""


def backoff(initial: float, maximum: float, rng: random.Random) -> Iterator[float]:
    """Waits between retries: doubling from `initial` up to `maximum`, each with equal jitter (half
    fixed, half random) so that watchers that failed together do not retry in step."""
    delay = initial
    while True:
        yield delay / 2 + rng.uniform(0, delay / 2)
        delay = min(delay * 2, maximum)


class _Outcome(enum.Enum):
    DONE = "done"
    AGAIN = "again"  # at once: list afresh
    FAILED = "failed"  # after a backoff delay
    FINISHED = "finished"  # kdns is shutting down


class ResourceWatcher:
    """List-then-watch of one resource, run in a worker thread; changes are handed to `deliver`,
    which runs them on the trio side."""

    def __init__(
        self,
        api_client: client.ApiClient,
        resource: Resource,
        namespace: str,
        options: WatchOptions,
        applier: Applier,
        deliver: Callable[[Callable[[], None]], None],
        counters: WatchCounters,
        on_listed: Callable[[], None],
        stop: threading.Event,
        pause: Callable[[float], object] | None = None,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.options = options
        self.applier = applier
        self.deliver = deliver
        self.counters = counters  # in the state seam
        self.on_listed = on_listed
        self.stop = stop
        # How a backoff delay is waited out: until `stop` is set, or the delay has passed. Tests
        # give their own, which records the delays and keeps no time.
        self.pause: Callable[[float], object] = pause if pause is not None else stop.wait
        self.name = watcher_name(resource, namespace)
        self._list_function = list_call(api_client, resource, namespace, options)
        self._version: str | None = None
        self._failing_since: float | None = None
        self._malformed_at: str | None = None  # the version a watch last broke at with a malformed line
        self._delays = self._fresh_backoff()  # started afresh each time the API answers again

    def _fresh_backoff(self) -> Iterator[float]:
        return backoff(self.options.backoff_initial, self.options.backoff_max, random.Random())

    def run(self) -> None:
        """Follow the resource until `stop` is set."""
        while not self.stop.is_set():
            outcome = self._attempt(self._follow)
            if outcome is _Outcome.FINISHED:
                return
            if outcome is _Outcome.FAILED:
                self.pause(next(self._delays))

    def list_first(self) -> bool:
        """List once, now, on the calling thread (a supervisor's first build, before it forks
        its workers); whether that worked. `run` then watches from the version listed, or lists
        again if this failed."""
        return self._attempt(self._list) is _Outcome.DONE

    def _follow(self) -> None:
        if self._version is None:
            self._list()
        self._watch()

    def _attempt(self, step: Callable[[], None]) -> _Outcome:
        """Run `step`, turning every failure into what `run` does next: this module's whole
        error policy for talking to the API."""
        try:
            step()
        except MalformedEvent as error:
            # Watching again resumes at the same version; if the stream breaks there again,
            # the line would come back forever: list afresh instead, past it.
            if self._malformed_at == self._version:
                log.warning("%s: %s, again at resourceVersion %s: listing again", self.name, error, self._version)
                self._version = None
                return _Outcome.AGAIN
            self._malformed_at = self._version
            self._failed(str(error))
        except ApiException as error:
            if error.status == GONE:
                log.info("%s: resourceVersion %s is too old (410 Gone): listing again", self.name, self._version)
                self._version = None
                return _Outcome.AGAIN
            self._failed(f"API answered {error.status} {error.reason}{_ADVICE.get(error.status, '')}")
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            self._failed(f"{type(error).__name__}: {error}")
        except trio.RunFinishedError:
            return _Outcome.FINISHED  # kdns is shutting down
        except Exception as error:  # a bug or a client surprise: retry, never stop serving
            log.exception("%s: unexpected error while following the API", self.name)
            self._failed(f"{type(error).__name__}: {error}")
        else:
            return _Outcome.DONE
        return _Outcome.FAILED

    def _failed(self, reason: str) -> None:
        self.counters.errors += 1  # only this watcher's thread writes it
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "%s: cannot reach the API (%s); retrying with backoff, serving the last known zone", self.name, reason
            )
        else:
            log.debug("%s: still failing: %s", self.name, reason)

    def _recovered(self) -> None:
        """The API answered: the outage (if any) is over, and the next one backs off from the
        shortest delay again, however long this one grew (client-go resets its backoff too)."""
        if self._failing_since is not None:
            log.warning("%s: API reachable again after %.1f s", self.name, time.monotonic() - self._failing_since)
            self._failing_since = None
            self._delays = self._fresh_backoff()

    def _list(self) -> None:
        """List page by page, each page applied as it arrives; then delete what was not listed.

        A list that fails halfway leaves the pages it got applied and deletes nothing: the zone
        holds old and new objects until the next list completes, and is never emptied."""
        kind, namespace = self.resource.kind, self.namespace or None
        listed: set[tuple[str, str]] = set()
        count = 0
        version: str | None = None
        for page, last_version in list_pages(self._list_function, self.options):
            self._recovered()
            count += len(page)
            prepared = [self.applier.prepare(kind, raw) for raw in page]  # here, in this thread
            self.deliver(partial(self.applier.apply_listed, kind, prepared, listed))
            version = last_version or version
        counters = self.counters

        def finish() -> None:
            self.applier.remove_unlisted(kind, namespace, listed)
            counters.last_list = time.time()
            if not counters.listed:
                counters.listed = True
                self.on_listed()
            else:
                counters.relists += 1

        log.info("%s: listed %d object(s) at resourceVersion %s", self.name, count, version)
        self.deliver(finish)
        self._version = version

    def _watch(self) -> None:
        """Watch from the last version seen until the server ends the stream.

        The stream is read here rather than through `kubernetes.watch.Watch`, whose handling of
        ERROR events needs the model classes we never build (with `deserialize=False` it fails on
        a 410 with a KeyError).
        """
        timeout = random.randint(self.options.watch_timeout, 2 * self.options.watch_timeout - 1)
        response = self._list_function(
            watch=True,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(self.options.request_timeout, timeout + self.options.request_timeout),
        )
        try:
            _check_status(response)
            self._recovered()  # a watch accepted is the API back, even before any event
            for line in iter_resp_lines(response):
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, Mapping):
                    raise MalformedEvent(f"a watch event that is not a JSON object: {line[:80]!r}")
                event_type, raw = event.get("type"), event.get("object")
                if event_type == "ERROR":
                    status = raw if isinstance(raw, Mapping) else {}
                    raise ApiException(
                        status=status.get("code", 500), reason=f"{status.get('reason')}: {status.get('message')}"
                    )
                self._recovered()
                version = _resource_version(raw)
                if event_type in ("ADDED", "MODIFIED", "DELETED"):
                    prepared = self.applier.prepare(self.resource.kind, raw)  # here, in this thread
                    self.deliver(partial(self._apply_event, event_type, prepared))
                elif event_type != "BOOKMARK":
                    log.warning("%s: unexpected watch event %r: ignored", self.name, event_type)
                if version is not None:
                    self._version = version  # bookmarks included: resume from the newest version seen
                if self.stop.is_set():
                    return
        finally:
            response.close()
            response.release_conn()

    def _apply_event(self, event_type: str, prepared: Prepared) -> None:
        if self.applier.apply_event(self.resource.kind, event_type, prepared):
            self.counters.events += 1


# What an operator should look at when the API refuses kdns, by HTTP status.
_ADVICE = {
    401: ": it refuses kdns's credentials (the service account token, or the kubeconfig's user)",
    403: ": kdns's account may not list and watch this resource (its RBAC: see manifests/)",
}


def _check_status(response: Any) -> None:
    """Raise `ApiException` for a non-2xx answer (not done by the client without preloading)."""
    status = getattr(response, "status", 0)
    if not 200 <= status <= 299:
        raise ApiException(status=status, reason=getattr(response, "reason", "") or "")


def list_pages(function: ListCall, options: WatchOptions) -> Iterator[tuple[list[Any], str | None]]:
    """The pages of a list call as they arrive, following `continue`: (items, None), and for the
    last page (items, the list's resourceVersion).

    The next page is asked for as soon as a page has arrived, on a thread of its own, while the
    caller converts and applies this one: the API server's time to serve each page (about 40 ms
    for 500 EndpointSlices of a 10,000-Service cluster) then passes beside kdns's work instead of
    between its pages. One page ahead at most: a list never holds more than two pages."""
    ahead = _Ahead(partial(_fetch_page, function, options, None))
    while True:
        items, token, version = ahead.result()
        if not token:
            yield items, version
            return
        ahead = _Ahead(partial(_fetch_page, function, options, token))
        yield items, None


def _fetch_page(function: ListCall, options: WatchOptions, token: str | None) -> tuple[list[Any], str, str | None]:
    """One page of a list: (its items, the `continue` token ('' on the last page), and on the
    last page the list's resourceVersion)."""
    response = function(limit=options.page_size, _continue=token or None, _request_timeout=options.request_timeout)
    try:
        _check_status(response)
        body = json.loads(response.data)
    finally:
        response.release_conn()
    # Only a real list may reconcile the store: anything else would read as "no objects".
    if not isinstance(body, Mapping) or not isinstance(body.get("items"), list):
        raise ValueError("list response is not a list object")
    metadata = body.get("metadata") or {}
    following = metadata.get("continue") or ""
    if following:
        return body["items"], following, None
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise ValueError("list response has no metadata.resourceVersion")
    return body["items"], "", version


class _Ahead:
    """A call run on a thread of its own while the caller works; `result` waits for it and
    returns what it returned or raises what it raised. The thread is a daemon: a list still
    asking when kdns ends does not hold the process (its request has its own timeout)."""

    def __init__(self, call: Callable[[], tuple[list[Any], str, str | None]]) -> None:
        self._outcome: tuple[list[Any], str, str | None] | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="kdns-list-ahead", daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], tuple[list[Any], str, str | None]]) -> None:
        try:
            self._outcome = call()
        except BaseException as error:  # handed to whoever waits for the result
            self._outcome = error

    def result(self) -> tuple[list[Any], str, str | None]:
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


def list_all(function: ListCall, options: WatchOptions) -> list[Any]:
    """Every object of a list call, all pages."""
    return [item for page, _ in list_pages(function, options) for item in page]


class ClusterFollower:
    """Every watcher kdns needs, and whether all of them have listed once."""

    def __init__(self, store: ClusterStore, api_client: client.ApiClient, options: WatchOptions, state: State) -> None:
        self.store = store
        self.options = options
        self.state = state
        # Not ready until every watcher has listed: from now, before anything is served.
        self.state.follow([watcher_name(resource, namespace) for resource, namespace in self._scopes()])
        # Until then Services are published once, at the end (a first sync builds each once).
        store.hold()
        self._stop = threading.Event()
        # Where changes are applied: on this thread until `run` starts, then on trio's.
        self._token: trio.lowlevel.TrioToken | None = None
        applier = Applier(store, options, programming=state.programming)
        self.watchers = [
            ResourceWatcher(
                api_client,
                resource,
                namespace,
                options,
                applier,
                self._deliver,
                state.watch(watcher_name(resource, namespace)),
                self._listed,
                self._stop,
            )
            for resource, namespace in self._scopes()
        ]

    def prime(self) -> bool:
        """List every resource once, on this thread, one after the other (no thread is left
        running: `--workers` forks next); whether all of them listed. What failed is listed again
        by `run`."""
        return all([watcher.list_first() for watcher in self.watchers])

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        limiter = trio.CapacityLimiter(len(self.watchers))
        try:
            async with trio.open_nursery() as nursery:
                if not self.state.synced():
                    nursery.start_soon(self._release_after, HOLD_LIMIT)
                for watcher in self.watchers:
                    nursery.start_soon(
                        partial(trio.to_thread.run_sync, watcher.run, abandon_on_cancel=True, limiter=limiter)
                    )
                task_status.started()
        finally:
            self._stop.set()

    async def _release_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        if not self.state.synced():
            log.warning("not every watcher has listed after %g s: serving what has been listed (not ready)", seconds)
            self.store.release()

    def _deliver(self, change: Callable[[], None]) -> None:
        """Run a watcher's change where the store is changed: on trio's thread once `run` has
        started (every change in one place, between queries), on the caller's before."""
        if self._token is None:
            _guarded(change)
        else:
            trio.from_thread.run_sync(_guarded, change, trio_token=self._token)

    def _scopes(self) -> Iterator[tuple[Resource, str]]:
        kinds = [Kind.NAMESPACE, Kind.SERVICE]
        kinds += [Kind.ENDPOINT_SLICE] if self.options.watch_endpoints else []  # CoreDNS's `noendpoints`
        kinds += [Kind.POD] if self.options.watch_pods else []
        for kind in kinds:
            for namespace in scopes(RESOURCES[kind], self.options):
                yield RESOURCES[kind], namespace

    def _listed(self) -> None:
        """A watcher has listed for the first time (on the trio side, or the priming thread)."""
        if self.state.synced():
            self.store.release()
            log.info("synced: every watcher has listed once; serving the cluster")


def _guarded(change: Callable[[], None]) -> None:
    try:
        change()
    except Exception:
        log.exception("error applying a cluster change; the zone keeps what it had")


def watcher_name(resource: Resource, namespace: str) -> str:
    """How a watcher is named in logs and in the state seam: `Service`, `Pod in prod`."""
    return resource.kind + (f" in {namespace}" if namespace else "")


def snapshot_items(api_client: client.ApiClient, options: WatchOptions) -> list[dict[str, Any]]:
    """One list of every kind kdns serves, as `kind: List` items (with kind and apiVersion)."""
    items: list[dict[str, Any]] = []
    allowed = set(options.namespaces)
    for resource in RESOURCES.values():
        for namespace in scopes(resource, options):
            for raw in list_all(list_call(api_client, resource, namespace, options), options):
                if (
                    resource.kind == Kind.NAMESPACE
                    and allowed
                    and (object_key(Kind.NAMESPACE, raw) or ("", ""))[1] not in allowed
                ):
                    continue
                items.append({"apiVersion": resource.api_version, "kind": str(resource.kind), **raw})
    return items


def scopes(resource: Resource, options: WatchOptions) -> list[str]:
    """The namespaces to list a resource in, one call each: "" (all) unless `--namespaces` limits
    a namespaced kind."""
    if not resource.namespaced or not options.namespaces:
        return [""]
    return list(options.namespaces)


def list_call(api_client: client.ApiClient, resource: Resource, namespace: str, options: WatchOptions) -> ListCall:
    """The request that lists (and watches) `resource` in `namespace` ("" for all), scoped for
    Services by the label selector (CoreDNS's `labels`)."""
    selector = options.label_selector if resource.kind == Kind.SERVICE else ""
    return ListCall(api_client, resource.path(namespace), selector)
