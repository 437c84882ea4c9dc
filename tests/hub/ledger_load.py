"""A ledger writer process for the concurrency and crash tests (and nothing else).

    python -m tests.hub.ledger_load DB_URL KEY_PATH FIRST COUNT [BATCH]

Records inferences FIRST..FIRST+COUNT-1 (deterministic content derived from the number) in
batches, printing each batch's last number as it commits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hub.ledger.keys import load_signing_key
from hub.ledger.ledger import Ledger
from hub.ledger.rewards import InferenceRecord
from hub.storage.engine import make_engine

NODES = ("3f9a2c11d0e4b701", "7b21e4aa90c35d02", "c4d5a6ee017f2a03", "e8f901bb5c6d7e04")


def record_for(n: int) -> InferenceRecord:
    node = NODES[n % len(NODES)]
    failover = n % 7 == 0
    segments = (
        [(NODES[(n + 1) % len(NODES)], 3), (node, n % 40 + 1)] if failover else [(node, n % 40 + 1)]
    )
    return InferenceRecord(
        request_id=f"req-{n:07d}", prompt_sha256=f"{n:064x}",
        outcome="failed" if n % 10 == 3 else "success", segments=segments, domain="medicine",
        latency_ms=12.5, candidates=[{"node": node, "posterior": 0.9}],
    )  # fmt: skip


def main() -> None:
    url, key_path, first, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    key = load_signing_key(key_path)
    ledger = Ledger(make_engine(url), key, key.public_key())
    numbers = list(range(first, first + count))
    for i in range(0, len(numbers), batch):
        chunk = numbers[i : i + batch]
        ledger.record_inferences([record_for(n) for n in chunk])
        print(chunk[-1], flush=True)


if __name__ == "__main__":
    main()
