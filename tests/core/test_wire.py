"""The query path on raw bytes: malformed packets, EDNS, truncation, flags (RFC 1035, 2181, 6891)."""

from __future__ import annotations

import random
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode

from kdns.core.cache import ForwardCache
from kdns.core.stage import ReplyOptions
from kdns.pipeline import Pending, Pipeline
from tests.builders import Obj, ask, endpoint, endpoint_slice, headless, pipeline_of, rcode, records, service, store_of

WEB = "web.prod.svc.cluster.local"


def _handler(*objects: Obj, max_udp: int = 1232) -> Pipeline:
    """A pipeline with no upstream: its replies are bytes, or None."""
    store = store_of(service("prod", "web", ["10.96.0.5"]), *objects)
    return pipeline_of(store, options=ReplyOptions(max_udp=max_udp))


def _answer(pipeline: Pipeline, packet: bytes, tcp: bool) -> bytes | None:
    reply = pipeline.answer(packet, tcp, None)
    assert not isinstance(reply, Pending)
    return reply


def _header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def _question(
    name: bytes = b"\x03web\x04prod\x03svc\x07cluster\x05local\x00", qtype: int = 1, qclass: int = 1
) -> bytes:
    return name + struct.pack("!HH", qtype, qclass)


def _parse(reply: bytes | None) -> dns.message.Message:
    assert reply is not None
    return dns.message.from_wire(reply, question_only=False)


def _rcode_of(reply: bytes | None) -> int:
    assert reply is not None
    return int(struct.unpack("!H", reply[2:4])[0]) & 0xF


def _id_of(reply: bytes | None) -> int:
    assert reply is not None
    return int(struct.unpack("!H", reply[:2])[0])


# -- malformed queries ---------------------------------------------------------------------------


def test_fragments_of_a_header_get_no_reply_which_would_only_amplify_them() -> None:
    handler = _handler()
    for size in range(2, 12):  # miekg/dns drops these too
        assert _answer(handler, _header()[:size], False) is None
        assert _answer(handler, _header()[:size], True) is None


def test_packet_too_short_for_an_id_is_dropped() -> None:
    assert _answer(_handler(), b"\x01", False) is None
    assert _answer(_handler(), b"", False) is None


def test_responses_are_never_answered() -> None:
    packet = _header(flags=0x8180) + _question()
    assert _answer(_handler(), packet, False) is None


def test_label_longer_than_63_is_formerr() -> None:
    name = b"\x40" + b"a" * 64 + b"\x00"
    reply = _answer(_handler(), _header() + _question(name), False)
    assert reply is not None and _rcode_of(reply) == 1 and _id_of(reply) == 0x1234


def test_name_longer_than_255_is_formerr() -> None:
    name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 bytes on the wire
    reply = _answer(_handler(), _header() + _question(name), False)
    assert reply is not None and _rcode_of(reply) == 1


def test_compression_pointer_loop_in_the_question_is_formerr() -> None:
    looping = b"\xc0\x0c"  # points at itself
    reply = _answer(_handler(), _header() + looping + b"\x00\x01\x00\x01", False)
    assert reply is not None and _rcode_of(reply) == 1


def test_qdcount_zero_and_two_are_formerr() -> None:
    handler = _handler()
    zero = _answer(handler, _header(qd=0), False)
    two = _answer(handler, _header(qd=2) + _question() + _question(), False)
    assert zero is not None and _rcode_of(zero) == 1
    assert two is not None and _rcode_of(two) == 1


def test_question_cut_short_is_formerr() -> None:
    handler = _handler()
    for packet in (_header() + _question()[:-2], _header() + b"\x03web", _header() + b"\x03web\x00"):
        reply = _answer(handler, packet, False)
        assert reply is not None and _rcode_of(reply) == 1, packet


def test_zero_byte_inside_a_label_is_a_name_like_any_other() -> None:
    """RFC 2181 11: any octet may appear in a label; `a\\000b.example` is forwarded, and under
    the cluster domain it is an ordinary missing name."""
    cache = ForwardCache(10, lambda: 0.0)
    options = ReplyOptions(recursion_available=True)
    pipeline = pipeline_of(store_of(service("prod", "web")), options=options, cache=cache)
    outside = b"\x03a\x00b\x07example\x00"
    decided = pipeline.answer(_header() + _question(outside, qtype=16), False, None)
    assert isinstance(decided, Pending)
    asked = decided.ask.query
    assert asked.key == outside and asked.qtype == 16
    assert asked.question == outside + b"\x00\x10\x00\x01"
    inside = b"\x03a\x00b\x04prod\x03svc\x07cluster\x05local\x00"
    for extra in (b"", b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"):
        wire = _answer(pipeline, _header(ar=1 if extra else 0) + _question(inside) + extra, False)
        assert isinstance(wire, bytes)
        reply = _parse(wire)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.question[0].name.labels[0] == b"a\x00b"


def test_error_replies_echo_only_a_question_that_parses() -> None:
    """A FORMERR or BADVERS reply to a question holding a pointer or a reserved label type
    carries no question rather than the malformed one (every reply must parse)."""
    handler = _handler()
    bad_names = [b"\xc0\x0c", b"\x01a\xc0\x0c", b"\x41abc\x00", b"\x03web\xc0\x05"]
    opts = [
        b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00",  # EDNS version 1: BADVERS
        b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x10\x00",  # runs past the packet: FORMERR
        b"\x01x\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",  # owner not root: FORMERR
    ]
    for name in bad_names:
        for opt in opts:
            packet = _header(ar=1) + name + b"\x00\x00\x01\x00\x01"[-4:] + opt
            wire = _answer(handler, packet, False)
            assert wire is not None
            reply = dns.message.from_wire(wire)  # raises if it does not parse
            assert reply.id == 0x1234 and reply.rcode() in (dns.rcode.FORMERR, dns.rcode.BADVERS)
            assert len(reply.question) <= 1


def test_reserved_label_types_are_formerr() -> None:
    reply = _answer(_handler(), _header() + b"\x41abc\x00\x00\x01\x00\x01", False)
    assert reply is not None and _rcode_of(reply) == 1


def test_opcodes_other_than_query_get_notimp() -> None:
    handler = _handler()
    for opcode in (dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE):
        reply = _answer(handler, _header(flags=opcode << 11) + _question(), False)
        assert reply is not None and _rcode_of(reply) == dns.rcode.NOTIMP
        assert (struct.unpack("!H", reply[2:4])[0] >> 11) & 0xF == opcode


def test_classes_other_than_in_are_refused() -> None:
    handler = _handler()
    for qclass in (3, 4, 255):  # CH, HS, ANY
        reply = _answer(handler, _header() + _question(qclass=qclass), False)
        assert reply is not None and _rcode_of(reply) == dns.rcode.REFUSED


def test_random_garbage_never_raises_and_never_answers_a_response() -> None:
    handler = _handler()
    rng = random.Random(20261128)
    valid = _header() + _question() + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    for _ in range(20000):
        if rng.random() < 0.5:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            packet = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
        reply = _answer(handler, packet, rng.random() < 0.5)
        if reply is not None:
            assert len(reply) >= 12
            assert reply[:2] == packet[:2]
            assert reply[2] & 0x80
        if len(packet) >= 3 and packet[2] & 0x80:
            assert reply is None


# -- flags ---------------------------------------------------------------------------------------


def test_reply_is_authoritative_and_copies_id_rd_and_cd() -> None:
    query = dns.message.make_query(WEB, "A")
    query.flags |= dns.flags.CD
    reply = _parse(_answer(_handler(), query.to_wire(), False))
    assert reply.id == query.id
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD and reply.flags & dns.flags.CD
    assert not reply.flags & dns.flags.TC


def test_recursion_not_requested_is_not_echoed() -> None:
    query = dns.message.make_query(WEB, "A")
    query.flags &= ~dns.flags.RD
    reply = _parse(_answer(_handler(), query.to_wire(), False))
    assert not reply.flags & dns.flags.RD


# -- EDNS ----------------------------------------------------------------------------------------


def test_edns_query_gets_an_opt_record_with_our_udp_size() -> None:
    reply = ask(_handler(max_udp=1400), WEB, payload=4096)
    assert reply.edns == 0 and reply.payload == 1400


def test_query_without_edns_gets_no_opt_record() -> None:
    assert ask(_handler(), WEB).edns == -1


def test_dnssec_ok_bit_is_echoed() -> None:
    query = dns.message.make_query(WEB, "A", want_dnssec=True)
    reply = _parse(_answer(_handler(), query.to_wire(), False))
    assert reply.ednsflags & dns.flags.DO


def test_unknown_edns_version_gets_badvers() -> None:
    query = dns.message.make_query(WEB, "A", use_edns=1)
    reply = _parse(_answer(_handler(), query.to_wire(), False))
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


def test_two_opt_records_are_formerr() -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    reply = _answer(_handler(), _header(ar=2) + _question() + opt + opt, False)
    assert reply is not None and _rcode_of(reply) == 1


def test_opt_record_running_past_the_packet_is_formerr() -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x10\x00"
    reply = _answer(_handler(), _header(ar=1) + _question() + opt, False)
    assert reply is not None and _rcode_of(reply) == 1


def test_opt_found_after_other_additional_records() -> None:
    cookie_like = b"\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x00\x00\x02\x01x"
    opt = b"\x00\x00\x29\x05\x00\x00\x00\x00\x00\x00\x00"
    reply = _parse(_answer(_handler(max_udp=4096), _header(ar=2) + _question() + cookie_like + opt, False))
    assert reply.edns == 0 and reply.payload == 4096


# -- sizes and truncation ------------------------------------------------------------------------


def _big_headless(count: int) -> tuple[Obj, Obj]:
    endpoints = [endpoint(f"10.244.{i // 250}.{i % 250 + 1}") for i in range(count)]
    ports = [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    return headless("prod", "big", ports=ports), endpoint_slice("prod", "big-a", "big", endpoints, ports=ports)


def test_answer_over_512_bytes_without_edns_sets_tc_and_carries_the_whole_records_that_fit() -> None:
    """CoreDNS (miekg/dns Truncate): whole records, as many as fit, and TC. A client that never
    retries over TCP (musl before 1.2.4) still gets addresses."""
    handler = _handler(*_big_headless(60))  # 60 A records: 16 bytes each, over 512
    query = dns.message.make_query("big.prod.svc.cluster.local", "A", use_edns=False)
    wire = _answer(handler, query.to_wire(), False)
    assert wire is not None and len(wire) <= 512
    reply = _parse(wire)
    assert reply.flags & dns.flags.TC
    kept = records(reply)
    assert 20 < len(kept) < 60 and len(wire) > 512 - 16
    assert set(kept) <= set(records(ask(handler, "big.prod.svc.cluster.local", "A", tcp=True)))


def test_the_same_answer_comes_whole_over_tcp() -> None:
    handler = _handler(*_big_headless(60))
    reply = ask(handler, "big.prod.svc.cluster.local", "A", tcp=True)
    assert not reply.flags & dns.flags.TC
    assert len(records(reply)) == 60


def test_edns_size_advertised_by_the_client_is_honoured() -> None:
    handler = _handler(*_big_headless(60), max_udp=4096)  # about 1 KB of answer
    small = ask(handler, "big.prod.svc.cluster.local", payload=512)
    large = ask(handler, "big.prod.svc.cluster.local", payload=2048)
    assert small.flags & dns.flags.TC
    assert not large.flags & dns.flags.TC and len(records(large)) == 60


def test_advertised_size_is_capped_at_our_maximum() -> None:
    handler = _handler(*_big_headless(100), max_udp=1232)  # about 1.7 KB of answer
    wire = _answer(handler, dns.message.make_query("big.prod.svc.cluster.local", "A", payload=4096).to_wire(), False)
    assert wire is not None and len(wire) <= 1232
    assert _parse(wire).flags & dns.flags.TC


def test_advertised_size_below_512_is_read_as_512() -> None:
    handler = _handler(*_big_headless(25))  # about 400 bytes of answer
    reply = ask(handler, "big.prod.svc.cluster.local", payload=100)
    assert not reply.flags & dns.flags.TC and len(records(reply)) == 25


def test_answer_section_is_kept_whole_before_the_additional_records_that_fit() -> None:
    handler = _handler(*_big_headless(12))  # 12 SRV (~60 B) fit in 1232, their addresses do not all
    whole = ask(handler, "_pg._tcp.big.prod.svc.cluster.local", "SRV", tcp=True)
    assert len(records(whole)) == 12 and len(records(whole, "additional")) == 12
    wire = _answer(
        handler, dns.message.make_query("_pg._tcp.big.prod.svc.cluster.local", "SRV", payload=1232).to_wire(), False
    )
    assert wire is not None and len(wire) <= 1232
    reply = _parse(wire)
    assert len(records(reply)) == 12
    assert 0 < len(records(reply, "additional")) < 12  # whole records, as many as fit
    assert reply.flags & dns.flags.TC  # something was left out (CoreDNS sets TC then too)
    assert reply.edns == 0


def test_a_reply_cut_to_fit_keeps_its_header_consistent() -> None:
    handler = _handler(*_big_headless(60))
    for payload in (512, 600, 1000, 1232):
        wire = _answer(
            handler, dns.message.make_query("big.prod.svc.cluster.local", "A", payload=payload).to_wire(), False
        )
        assert wire is not None and len(wire) <= payload
        reply = _parse(wire)
        assert reply.edns == 0 and len(reply.answer[0]) == struct.unpack("!H", wire[6:8])[0]


def test_negative_answers_fit_and_keep_their_rcode_under_edns() -> None:
    reply = ask(_handler(), "nope.prod.svc.cluster.local", payload=1232)
    assert rcode(reply) == "NXDOMAIN" and reply.edns == 0 and len(reply.authority) == 1


def test_answer_larger_than_a_tcp_message_is_cut_to_fit() -> None:
    handler = _handler(*_big_headless(5000))  # 5000 x 16 bytes: more than 64 KiB
    query = dns.message.make_query("big.prod.svc.cluster.local", "A")
    wire = _answer(handler, query.to_wire(), True)
    assert wire is not None and len(wire) <= 65535
    assert 3000 < len(_parse(wire).answer[0]) < 5000
