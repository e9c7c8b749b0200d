"""Conversion off the event loop (issue 9, point 5): API objects are converted in the thread that
read them from the watch stream; the trio side only applies converted objects. kdns runs
in-process (`app.run`) following the test API server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from kdns import app
from kdns.config import WatchOptions
from kdns.sources import kube
from tests.apiserver import FakeApiServer
from tests.builders import namespace, service
from tests.helpers import ask_in_process, serve_config


async def test_objects_are_converted_in_the_watch_threads_never_on_the_event_loop(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApiServer()
    api.apply(namespace("prod"))
    api.apply(service("prod", "web", ["10.96.0.5"]))
    converted_on: list[bool] = []  # whether each conversion ran on the event loop's thread
    real_convert = kube.convert  # type: ignore[attr-defined]  # kube imports it; the test replaces it there

    def recording(kind: Any, raw: Any) -> Any:
        converted_on.append(threading.current_thread() is threading.main_thread())
        return real_convert(kind, raw)

    monkeypatch.setattr(kube, "convert", recording)
    config = serve_config(snapshot=None, kubeconfig=str(api.kubeconfig(tmp_path)), watch=WatchOptions(watch_timeout=5))
    try:
        running: app.Running = await nursery.start(app.run, config)
        with trio.fail_after(10):
            while not running.state.ready():
                await trio.sleep(0.02)
        assert (await ask_in_process(running.addresses[0], "web.prod.svc.cluster.local")).answer[0][
            0
        ].address == "10.96.0.5"
        await trio.to_thread.run_sync(api.apply, service("prod", "late", ["10.96.0.9"]))
        with trio.fail_after(10):
            while not (await ask_in_process(running.addresses[0], "late.prod.svc.cluster.local")).answer:
                await trio.sleep(0.02)
        assert len(converted_on) >= 3 and not any(converted_on)
        watches = running.state.watches
        assert watches["Service"].listed and watches["Service"].events >= 1
    finally:
        nursery.cancel_scope.cancel()
        api.stop()
