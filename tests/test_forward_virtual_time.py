"""Failover, mark-down, health-probe recovery, serve-stale and prefetch of the forwarder on trio's
virtual clock (issue 9, point 6): the upstream timeouts (2 s a try) and the 0.5 s health probes
pass at once, with real UDP to fake upstreams on loopback. `autojump_threshold` lets a real
answer arrive before virtual time jumps."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest
import trio
import trio.testing

from kdns import app
from kdns.address import SocketAddress
from kdns.config import ForwardConfig, ForwardOptions, Policy, ServeConfig
from kdns.core.cache import ForwardCache
from kdns.core.stage import ReplyOptions
from kdns.forward import Forwarder
from kdns.pipeline import Pending, Pipeline
from kdns.state import State
from tests.builders import pipeline_of, store_of
from tests.fakeupstream import FakeUpstream
from tests.helpers import ask_in_process, serve_config


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)  # real seconds of quiet before a jump


async def _ask(pipeline: Pipeline, name: str) -> dns.message.Message:
    decided = pipeline.answer(dns.message.make_query(name, "A").to_wire(), False, ("127.0.0.1", 5353))
    if isinstance(decided, Pending):
        decided = await decided()
    assert isinstance(decided, bytes)
    return dns.message.from_wire(decided)


FORWARDING = ReplyOptions(recursion_available=True)


async def test_a_silent_upstream_fails_over_is_marked_down_and_comes_back_by_its_health_probe(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    first, second = upstreams
    first.mode = "silent"
    state = State()
    forwarder = Forwarder(
        [[SocketAddress("127.0.0.1", first.port), SocketAddress("127.0.0.1", second.port)]],
        ForwardOptions(policy=Policy.SEQUENTIAL, timeout=2.0),
        state,
    )
    nothing_cached = ForwardCache(0, trio.current_time)
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=nothing_cached, transport=forwarder, state=state)
    await nursery.start(forwarder.run)
    started = trio.current_time()
    for i in range(2):  # each tries the silent one first, waits out its timeout, then fails over
        assert (await _ask(pipeline, f"q{i}.example.com")).answer[0][0].address == "192.0.2.2"
    assert trio.current_time() - started >= 4.0  # two 2-second timeouts, in virtual time
    silent = state.upstreams[f"127.0.0.1:{first.port}"]
    assert silent.down and silent.failures == 2
    # Down: tried last, so the next query goes straight to the second upstream.
    started = trio.current_time()
    assert (await _ask(pipeline, "q2.example.com")).answer[0][0].address == "192.0.2.2"
    assert trio.current_time() - started < 1.0
    # The health probe (`. NS` every 0.5 s) keeps failing while it is silent ...
    await trio.sleep(3)  # a probe waits out the 2-second timeout too
    assert silent.down and silent.healthcheck_failures >= 1
    # ... and brings it back as soon as it answers again.
    first.mode = "answer"
    with trio.fail_after(5):
        while silent.down:
            await trio.sleep(0.5)
    assert (await _ask(pipeline, "q3.example.com")).answer[0][0].address == "192.0.2.1"
    assert forwarder.in_flight == 0
    nursery.cancel_scope.cancel()


async def test_max_fails_and_the_health_checks_interval_name_and_rd_are_the_corefiles(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    """CoreDNS's forward `max_fails 3` and `health_check 2s no_rec domain example.org`."""
    first, second = upstreams
    first.mode = "silent"
    state = State()
    options = ForwardOptions(
        policy=Policy.SEQUENTIAL,
        timeout=1.0,
        max_fails=3,
        health_check=2.0,
        health_check_name="example.org",
        health_check_recursion=False,
    )
    group = [SocketAddress("127.0.0.1", first.port), SocketAddress("127.0.0.1", second.port)]
    forwarder = Forwarder([group], options, state)
    pipeline = pipeline_of(
        store_of(), options=FORWARDING, cache=ForwardCache(0, trio.current_time), transport=forwarder, state=state
    )
    await nursery.start(forwarder.run)
    silent = state.upstreams[f"127.0.0.1:{first.port}"]
    for i in range(3):
        assert not silent.down, f"down after {i} failures"
        assert (await _ask(pipeline, f"q{i}.example.com")).answer[0][0].address == "192.0.2.2"
    assert silent.down and silent.failures == 3
    checked = len(first.asked)
    await trio.sleep(10)  # a check every 2 s after the last one's 1 s timeout: 3 (6 at the default 0.5 s)
    probes = first.asked[checked:]
    assert 2 <= len(probes) <= 4 and set(probes) == {("example.org.", "NS", False)}
    # max_fails 0: never marked down, however often it fails.
    never = Forwarder([group], ForwardOptions(policy=Policy.SEQUENTIAL, timeout=1.0, max_fails=0), State())
    for _ in range(5):
        never.groups[0][0].failed(never.options.max_fails)
    assert not never.groups[0][0].down
    nursery.cancel_scope.cancel()


async def test_serve_stale_and_prefetch_on_virtual_time(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    first, _ = upstreams
    first.ttl = 10
    cache = ForwardCache(100, trio.current_time, stale_for=3600, prefetch=True)
    state = State()
    forwarder = Forwarder([[SocketAddress("127.0.0.1", first.port)]], ForwardOptions(timeout=1.0), state)
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=cache, transport=forwarder, state=state)
    await nursery.start(forwarder.run)
    await nursery.start(pipeline.run)

    assert (await _ask(pipeline, "www.example.com")).answer[0].ttl == 10
    asked = first.udp_queries
    await trio.sleep(9.1)  # within the last tenth of the TTL: popular entries are refreshed
    for _ in range(3):
        await _ask(pipeline, "www.example.com")
    await trio.sleep(0.6)  # the pipeline's prefetch loop runs
    assert first.udp_queries == asked + 1, "the popular entry was refreshed once before it expired"
    assert (await _ask(pipeline, "www.example.com")).answer[0].ttl >= 9  # from the refreshed entry
    # Every upstream fails: the expired entry is served stale, TTL 30 (RFC 8767).
    first.mode = "silent"
    await trio.sleep(11)
    stale = await _ask(pipeline, "www.example.com")
    assert stale.rcode() == dns.rcode.NOERROR and stale.answer[0].ttl == 30
    assert (await _ask(pipeline, "never.example.com")).rcode() == dns.rcode.SERVFAIL
    nursery.cancel_scope.cancel()


# -- the whole program, in-process, on virtual time ------------------------------------------------


def _forwarding_config(upstream: FakeUpstream, **forward: object) -> ServeConfig:
    fields: dict[str, object] = {
        "upstreams": (SocketAddress("127.0.0.1", upstream.port),),
        "upstreams_from": "--upstream",
        "stubs": (),
        "options": ForwardOptions(timeout=0.3),
        "cache_size": 10000,
        "serve_stale": 0.0,
        "prefetch": False,
    }
    fields.update(forward)
    return serve_config(forward=ForwardConfig(**fields))  # type: ignore[arg-type]


async def _ask_app(running: app.Running, name: str) -> dns.message.Message:
    return await ask_in_process(running.addresses[0], name)


async def test_cached_answers_count_their_ttl_down_on_the_programs_clock(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstream, _ = upstreams
    running: app.Running = await nursery.start(app.run, _forwarding_config(upstream))
    first = await _ask_app(running, "cached.example")
    assert first.answer[0][0].address == "192.0.2.1" and first.answer[0].ttl == 300
    await trio.sleep(2.1)
    second = await _ask_app(running, "CACHED.example")
    assert upstream.queries == 1 and 297 <= second.answer[0].ttl <= 298
    assert running.state.cache is not None and running.state.cache.hits == 1
    nursery.cancel_scope.cancel()


async def test_keepttl_serves_the_stored_ttl_until_the_answer_expires_as_coredns(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    """CoreDNS's cache `keepttl` (plugin/cache/handler.go serves as if `now` were when it was
    stored): the TTL as it came, not counted down, until the answer expires and is asked again."""
    upstream, _ = upstreams
    options = ForwardOptions(timeout=0.3, max_ttl=30)
    running: app.Running = await nursery.start(app.run, _forwarding_config(upstream, keep_ttl=True, options=options))
    assert (await _ask_app(running, "kept.example")).answer[0].ttl == 30
    for wait in (2.1, 10.0, 15.0):  # 27.1 s in all: still cached, still 30
        await trio.sleep(wait)
        assert (await _ask_app(running, "KEPT.example")).answer[0].ttl == 30
    assert upstream.queries == 1
    await trio.sleep(3.0)  # past its 30 s
    assert (await _ask_app(running, "kept.example")).answer[0].ttl == 30 and upstream.queries == 2
    nursery.cancel_scope.cancel()


async def test_cache_size_evicts_and_max_ttl_clamps_on_virtual_time(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstream, _ = upstreams
    options = ForwardOptions(timeout=0.3, max_ttl=1)
    running: app.Running = await nursery.start(app.run, _forwarding_config(upstream, cache_size=1, options=options))
    for name in ("a.example", "b.example", "a.example"):  # b evicts a
        await _ask_app(running, name)
    assert upstream.queries == 3
    clamped = await _ask_app(running, "a.example")
    assert upstream.queries == 3 and clamped.answer[0].ttl <= 1  # served TTL capped at the cache's
    await trio.sleep(1.2)  # past the 1 s the clamp allows
    await _ask_app(running, "a.example")
    assert upstream.queries == 4
    assert running.state.cache is not None and running.state.cache.evictions >= 1
    nursery.cancel_scope.cancel()


async def test_serve_stale_through_the_program_when_every_upstream_fails(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstream, _ = upstreams
    upstream.ttl = 1
    stale_config = _forwarding_config(upstream, serve_stale=60.0)
    server: app.Running = await nursery.start(app.run, stale_config)
    plain: app.Running = await nursery.start(app.run, _forwarding_config(upstream))
    await _ask_app(server, "stale.example")
    await _ask_app(plain, "stale.example")
    upstream.mode = "silent"
    await trio.sleep(1.3)
    stale = await _ask_app(server, "stale.example")
    assert stale.answer[0][0].address == "192.0.2.1" and stale.answer[0].ttl == 30
    assert (await _ask_app(plain, "stale.example")).rcode() == dns.rcode.SERVFAIL
    nursery.cancel_scope.cancel()


async def test_prefetch_through_the_program_refreshes_a_popular_answer_before_it_expires(
    nursery: trio.Nursery, clock: trio.testing.MockClock, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstream, _ = upstreams
    upstream.ttl = 5
    running: app.Running = await nursery.start(app.run, _forwarding_config(upstream, prefetch=True))
    started = trio.current_time()
    for at in (0, 0.5, 4.6):  # the third ask falls in the last tenth of the TTL
        await trio.sleep_until(started + at)
        assert (await _ask_app(running, "hot.example")).answer[0][0].address == "192.0.2.1"
    with trio.fail_after(2):
        while upstream.queries < 2:  # refreshed in the background
            await trio.sleep(0.1)
    await trio.sleep_until(started + 5.5)
    fresh = await _ask_app(running, "hot.example")  # past the first answer's expiry: still a hit
    assert upstream.queries == 2 and fresh.answer[0].ttl >= 4
    nursery.cancel_scope.cancel()
