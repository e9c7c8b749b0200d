"""Amplification: the largest UDP reply kdns sends for the size of the query that asked for it.

Every name the zone holds is asked with every type it has, and with ANY, SRV, and the types it
has not, once without EDNS (replies capped at 512 bytes) and once with EDNS advertising 65,535
(replies capped at kdns's `--max-udp-size`, 1232 by default). The query sent is the smallest that
asks (no padding, no options); the ratio is reply bytes over query bytes. The snapshot is the
example cluster plus a headless Service with `--endpoints` ready endpoints and a named port, the
worst case for the answer size. Runs in-process on the pipeline (no sockets), which is what the UDP
listener sends. Nothing is asserted.

    .venv/bin/python bench/amplification.py [--endpoints 200] [--max-udp 1232]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dns.message
import dns.rdatatype

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdns.core.convert import convert  # noqa: E402
from kdns.core.stage import ReplyOptions  # noqa: E402
from kdns.core.store import ClusterStore  # noqa: E402
from kdns.sources import snapshot  # noqa: E402
from tests.builders import endpoint, endpoint_slice, headless, pipeline_of  # noqa: E402

TYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "CNAME", "ANY", "MX"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--max-udp", type=int, default=1232)
    args = parser.parse_args()
    store = ClusterStore("cluster.local", 30)
    store.load(snapshot.load(ROOT / "examples" / "cluster.yaml").objects)
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}]
    big = [endpoint(f"10.250.{i // 250}.{i % 250 + 1}", hostname=f"h{i}") for i in range(args.endpoints)]
    for obj in (headless("prod", "big", ports=ports), endpoint_slice("prod", "big-a", "big", big, ports=ports)):
        converted = convert(obj["kind"], obj)
        assert converted is not None
        store.upsert(converted)
    handler = pipeline_of(store, options=ReplyOptions(max_udp=args.max_udp))
    names = sorted({owner for owner, _, _ in store.zone.names()})
    for edns in (False, True):
        worst = (0.0, 0, 0, "")
        for name in names:
            for rdtype in TYPES:
                query = dns.message.make_query(name, rdtype, use_edns=edns, payload=65535)
                query.flags = 0x0100
                wire = query.to_wire()
                reply = handler.answer(wire, False, None)
                if not isinstance(reply, bytes):
                    continue
                ratio = len(reply) / len(wire)
                if ratio > worst[0]:
                    worst = (ratio, len(reply), len(wire), f"{name} {rdtype}")
        ratio, reply_size, query_size, asked = worst
        label = f"with EDNS (--max-udp-size {args.max_udp})" if edns else "without EDNS (512 bytes)"
        print(f"{label:40}: {ratio:5.1f} x  ({reply_size} bytes for a {query_size}-byte query: {asked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
