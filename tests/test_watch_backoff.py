"""A watcher's retries while the API fails, on injected time: the real kubernetes client against
the fake API server (tests/apiserver.py), with the backoff's waits recorded instead of slept."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from kdns.config import WatchOptions
from kdns.core.model import Kind
from kdns.core.store import ClusterStore
from kdns.sources.kube import RESOURCES, Applier, ResourceWatcher, load_api_client
from kdns.state import WatchCounters
from tests.apiserver import FakeApiServer
from tests.builders import ask, rcode

OPTIONS = WatchOptions(backoff_initial=0.5, backoff_max=4.0, request_timeout=5, watch_timeout=60)


class Script:
    """The watcher's pauses, recorded; each may act on the fake API before the next try."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.delays: list[float] = []
        self.actions: dict[int, list[Callable[[], None]]] = {}

    def pause(self, delay: float) -> bool:
        self.delays.append(delay)
        for action in self.actions.get(len(self.delays), []):
            action()
        return self.stop.is_set()


def _watcher(
    api: FakeApiServer, tmp_path: Path, script: Script, on_listed: object
) -> tuple[ResourceWatcher, ClusterStore]:
    store = ClusterStore("cluster.local", 30)
    assert callable(on_listed)
    watcher = ResourceWatcher(
        load_api_client(str(api.kubeconfig(tmp_path)), None),
        RESOURCES[Kind.SERVICE],
        "",
        OPTIONS,
        Applier(store, OPTIONS),
        lambda change: change(),  # applied at once, on this thread: no trio here
        WatchCounters(),
        on_listed,
        script.stop,
        pause=script.pause,
    )
    return watcher, store


def test_failing_lists_back_off_doubling_to_the_cap_and_start_afresh_once_the_api_answers(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    script = Script(stop)
    api.fail()  # every request answered 500 from the start
    script.actions[6] = [lambda: api.fail(False)]  # after six failed lists, the API is back

    def listed() -> None:
        api.fail()  # ... and fails again at once: the watch after the list gets 500

    script.actions[7] = [stop.set]
    watcher, store = _watcher(api, tmp_path, script, listed)
    with caplog.at_level(logging.INFO, logger="kdns.sources.kube"):
        watcher.run()  # returns once stopped: on this thread, no real wait anywhere
    # Six failures: equal jitter under a ceiling doubling from 0.5 s to the 4 s cap.
    for delay, ceiling in zip(script.delays[:6], [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling, script.delays
    # The list succeeded in between: the next outage starts again from the shortest delay.
    assert 0.25 <= script.delays[6] <= 0.5, script.delays
    assert watcher.counters.errors == 7 and watcher.counters.listed
    assert rcode(ask(store, "web.prod.svc.cluster.local")) == "NOERROR"  # the list was applied
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert sum("cannot reach the API" in message for message in warnings) == 2  # once per outage
    assert sum("API reachable again" in message for message in warnings) == 1
    assert "API answered 500" in warnings[0]


def test_a_watch_accepted_after_an_outage_counts_as_recovery_before_any_event(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    script = Script(stop)
    listed = threading.Event()
    watcher, _ = _watcher(api, tmp_path, script, listed.set)

    def outage_then_back() -> None:
        api.fail(False)  # the watch after this pause is accepted, and no event ever comes

    def stop_watching() -> None:
        stop.set()
        api.drop_connections()  # end the open watch: run() sees `stop` and returns

    script.actions[2] = [outage_then_back]
    thread = threading.Thread(target=watcher.run)
    with caplog.at_level(logging.INFO, logger="kdns.sources.kube"):
        api.fail()  # before the first list: two failures
        thread.start()
        # Waits for the watcher's own progress, not for time: the recovery is logged when the
        # watch request is accepted.
        deadline_ok = _wait_for(lambda: any("API reachable again" in r.getMessage() for r in caplog.records))
        stop_watching()
        thread.join(10)
    assert deadline_ok and not thread.is_alive()
    assert len(script.delays) == 2 and listed.is_set()


def _wait_for(check: Callable[[], bool], attempts: int = 500) -> bool:
    event = threading.Event()
    for _ in range(attempts):
        if check():
            return True
        event.wait(0.02)
    return False


async def test_a_first_sync_that_never_completes_serves_what_was_listed_after_the_hold_limit(
    api: FakeApiServer, tmp_path: Path, autojump_clock: object
) -> None:
    """Services are held back until every watcher has listed once (`ClusterStore.hold`); a
    resource the API keeps refusing must not keep the listed ones from being served for more
    than HOLD_LIMIT seconds (on virtual time here)."""
    from kdns.sources.kube import HOLD_LIMIT, ClusterFollower
    from kdns.state import State

    api.forbidden.add("EndpointSlice")
    store = ClusterStore("cluster.local", 30)
    state = State()
    options = WatchOptions(backoff_initial=0.05, backoff_max=0.1, request_timeout=5, watch_timeout=60)
    follower = ClusterFollower(store, load_api_client(str(api.kubeconfig(tmp_path)), None), options, state)
    assert follower.prime() is False  # Services and Namespaces listed, EndpointSlices refused
    assert rcode(ask(store, "web.prod.svc.cluster.local")) == "NXDOMAIN"  # held back
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        await trio.sleep(HOLD_LIMIT + 1)
        assert not state.synced()
        assert rcode(ask(store, "web.prod.svc.cluster.local")) == "NOERROR"  # served, not ready
        nursery.cancel_scope.cancel()
