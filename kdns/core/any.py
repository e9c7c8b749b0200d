"""The any stage (CoreDNS's `any`, RFC 8482 4.2): a query of type ANY gets one synthesized HINFO
record, never the name's every record set (ANY is an amplification vector, and clients that
need every type ask each one)."""

from __future__ import annotations

from kdns.core import rdata
from kdns.core.answer import Answer
from kdns.core.message import QR
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, answered
from kdns.core.zone import QUESTION_POINTER

# plugin/any/any.go: TTL 8482, CPU "ANY obsoleted", OS "See RFC 8482"; not authoritative.
HINFO_TTL = 8482
_HINFO = rdata.Record(rdata.HINFO, rdata.txt("ANY obsoleted", "See RFC 8482").rdata)
_ANSWER = Answer(0, 1, 0, 0, rdata.encode_rr(QUESTION_POINTER, _HINFO, HINFO_TTL), None, QR)


class AnyStage:
    def __init__(self, options: ReplyOptions) -> None:
        self._options = options

    def serve(self, request: Request, next: Next) -> Outcome:
        if request.query.qtype != rdata.ANY:
            return next(request)
        return answered(request, _ANSWER, self._options, None)
