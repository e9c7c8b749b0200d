"""Listing page by page (`kdns.sources.kube.list_pages`): the pages in order, the next one asked
for while the caller works on this one and never more than one ahead, and a page that fails
raised only after every page before it was handed over."""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import Any

import pytest

from kdns.config import WatchOptions
from kdns.sources.kube import list_pages


class _Response:
    def __init__(self, body: object, status: int = 200) -> None:
        self.data = json.dumps(body).encode()
        self.status = status
        self.reason = "OK" if status == 200 else "Gone"

    def release_conn(self) -> None:
        pass


class _Pages:
    """Stands in for a `ListCall` (the API server's part is tested against the real one in
    tests/test_real_apiserver.py): serves `count` pages of one item each, following `continue`;
    `fail_at` answers that page 410. Records each request's token as it is made."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.asked: list[int] = []
        self.changed = threading.Condition()

    def has_asked(self, pages: int) -> bool:
        return len(self.asked) >= pages

    def __call__(self, *, limit: int, _continue: str | None, _request_timeout: Any) -> _Response:
        page = int(_continue or 0)
        with self.changed:
            self.asked.append(page)
            self.changed.notify_all()
        if page == self.fail_at:
            return _Response({"kind": "Status"}, status=410)
        metadata: dict[str, str] = {"continue": str(page + 1)} if page + 1 < self.count else {"resourceVersion": "42"}
        return _Response({"items": [{"page": page}], "metadata": metadata})


def _pages(function: _Pages) -> Any:
    return list_pages(function, WatchOptions())  # type: ignore[arg-type]  # a ListCall's interface


def test_pages_come_in_order_with_the_lists_version_on_the_last() -> None:
    pages = list(_pages(_Pages(4)))
    assert pages == [([{"page": 0}], None), ([{"page": 1}], None), ([{"page": 2}], None), ([{"page": 3}], "42")]


def test_the_next_page_is_asked_for_while_this_one_is_worked_on_and_never_more_than_one_ahead() -> None:
    function = _Pages(5)
    seen = 0
    for items, _ in _pages(function):
        page = items[0]["page"]
        assert seen == page
        expected = list(range(min(page + 2, 5)))  # this page's and the next: no more
        with function.changed:  # the request for the next page is made without waiting for us
            assert function.changed.wait_for(partial(function.has_asked, len(expected)), timeout=10)
            assert function.asked == expected
        seen += 1
    assert seen == 5


def test_a_failing_page_is_raised_after_every_page_before_it() -> None:
    handed: list[int] = []
    with pytest.raises(Exception, match="410"):
        for items, _ in _pages(_Pages(5, fail_at=3)):
            handed.append(items[0]["page"])
    assert handed == [0, 1, 2]


def test_a_reply_that_is_not_a_list_is_refused_rather_than_read_as_no_objects() -> None:
    def not_a_list(**_: Any) -> _Response:
        return _Response({"kind": "Status", "metadata": {"resourceVersion": "1"}})

    with pytest.raises(ValueError, match="not a list"):
        list(list_pages(not_a_list, WatchOptions()))  # type: ignore[arg-type]
