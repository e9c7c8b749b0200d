"""The long fuzzing run, without hypothesis's per-input bookkeeping: the same seeds, mutations and
invariants as `tests/test_fuzz.py` (a real query of every type, EDNS, DO, CD, compression
pointers, long names, mutated byte by byte; or random bytes), drawn from a seeded
`random.Random`, at tens of thousands of inputs a second.

    .venv/bin/python bench/fuzz_long.py --inputs 1000000 [--seed 1]

Prints the inputs run, the replies checked, and the first failing input if there is one (exit 1).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz import (  # noqa: E402
    QUESTION_NAMES,
    QUESTION_TYPES,
    answer,
    check_reply,
    compressed_query,
    fuzz_pipeline,
    seed_query,
)

PIPELINE = fuzz_pipeline()


def message(rng: random.Random) -> bytes:
    """One input, drawn as `tests.fuzz.mutated_messages` draws it."""
    if rng.randrange(10) == 0:
        return rng.randbytes(rng.randrange(600))
    if rng.randrange(8) == 0:
        data = bytearray(compressed_query(rng.randrange(len(QUESTION_NAMES))))
    else:
        data = bytearray(
            seed_query(
                rng.choice(QUESTION_NAMES),
                rng.choice(QUESTION_TYPES),
                rng.choice([None, 0, 0, 1]),
                rng.choice([0, 100, 512, 1232, 4096, 65535]),
                rng.random() < 0.5,
                rng.random() < 0.5,
                rng.random() < 0.5,
            )
        )
    for _ in range(rng.randrange(7)):
        if not data:
            break
        action, at = rng.randrange(6), rng.randrange(len(data))
        if action == 0:
            data[at] = rng.randrange(256)
        elif action == 1:
            data[at] = rng.choice([0x00, 0x3F, 0x40, 0x80, 0xC0, 0xFF])
        elif action == 2:
            del data[at:]
        elif action == 3:
            data[at:at] = rng.randbytes(rng.randrange(1, 21))
        elif action == 4 and len(data) >= 12:
            field = rng.randrange(2, 6)
            data[field * 2 : field * 2 + 2] = struct.pack("!H", rng.choice([0, 1, 2, 3, 255, 65535]))
        else:
            data[at : at + 2] = struct.pack("!H", 0xC000 | rng.randrange(0x4000))
    return bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    replies = 0
    started = time.perf_counter()
    for count in range(1, args.inputs + 1):
        packet = message(rng)
        tcp = rng.random() < 0.5
        try:
            reply = answer(PIPELINE, packet, tcp)
            if reply is not None:
                check_reply(packet, reply, tcp)
                replies += 1
        except Exception as error:
            print(f"input {count} fails: {packet.hex()} (tcp={tcp}): {type(error).__name__}: {error}")
            return 1
    seconds = time.perf_counter() - started
    print(f"{args.inputs} inputs (seed {args.seed}), {replies} replies checked, no failure, in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
