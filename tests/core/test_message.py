"""Message primitives (kdns/core/message.py): names walked with and without compression, and TCP
length framing."""

from __future__ import annotations

import pytest

from kdns.core.message import MalformedName, frame, framed_length, name_end, read_name, skip_name

WEB = b"\x03web\x04prod\x00"


def test_name_end_walks_plain_labels_and_refuses_everything_else() -> None:
    assert name_end(WEB, 0) == len(WEB)
    assert name_end(b"\x00", 0) == 1
    assert name_end(b"\x03a\x00b\x00", 0) == 5  # a zero byte inside a label is part of it
    assert name_end(b"\xc0\x0c", 0) == -1  # a pointer
    assert name_end(b"\x41" + b"a" * 65 + b"\x00", 0) == -1  # a reserved label type
    assert name_end(b"\x03web", 0) == -1  # runs off the message
    assert name_end((b"\x3f" + b"a" * 63) * 4 + b"\x00", 0) == -1  # 257 bytes


def test_read_name_follows_pointers_backwards_only() -> None:
    message = b"\x00" * 12 + WEB + b"\x01x\xc0\x0c"
    assert read_name(message, 12 + len(WEB)) == len(message)
    for bad in (b"\xc0\x14", b"\xc0\x30", b"\xc0"):  # itself, past the end, cut short
        with pytest.raises(MalformedName):
            read_name(b"\x00" * 20 + bad, 20)
    looping = b"\x00" * 12 + b"\x01a\xc0\x0e"  # points into its own first label, forwards of it
    with pytest.raises(MalformedName):
        read_name(looping, 12)
    long_chain = b"\x00" * 12 + (b"\x3f" + b"a" * 63) * 2 + b"\x00"  # 129 bytes
    assert read_name(long_chain + b"\x3f" + b"b" * 63 + b"\xc0\x0c", len(long_chain)) > 0
    with pytest.raises(MalformedName):  # the name the pointer makes is over 255 bytes
        read_name(long_chain + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\xc0\x0c", len(long_chain))


def test_skip_name_steps_over_without_following() -> None:
    assert skip_name(b"\x01a\xc0\x0c", 0) == 4
    assert skip_name(b"\x01a\xc0", 0) == -1
    assert skip_name(b"\x41", 0) == -1


def test_tcp_framing() -> None:
    assert frame(b"abc") == b"\x00\x03abc"
    assert framed_length(b"") is None and framed_length(b"\x01") is None
    assert framed_length(b"\x01\x02rest") == 258
