"""Group commit for the ledger: many request handlers, one writer thread, few transactions.

A handler submits its inference record and waits on the returned future; the writer takes
whatever has queued (up to `max_batch`), writes it in one transaction, and only then resolves
the futures. So an answer is never reported successful before its entry is durable, yet under
load one fsync covers hundreds of inferences. If a batch fails, its records are retried one
in halves, so a single bad record fails alone at the cost of a few extra transactions.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from hub.ledger.ledger import Ledger, RecordResult
from hub.ledger.rewards import InferenceRecord

_STOP = object()


class LedgerWriter:
    def __init__(self, ledger: Ledger, max_batch: int = 512, linger_s: float = 0.001) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        # Under load, wait this long for more records before writing: handlers woken by the last
        # commit need a moment to submit again. An idle hub (batches of one) never waits.
        self.linger_s = linger_s
        self._last_batch = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._closed = False
        self._lock = threading.Lock()
        self._thread.start()

    def submit(self, record: InferenceRecord) -> Future[RecordResult]:
        """Queue a record; the future resolves once it is durable. Cancelling the future only
        stops the caller waiting: the record is still written."""
        future: Future[RecordResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("ledger writer is closed")
            self._queue.put((record, future))
        return future

    def record(self, record: InferenceRecord, timeout: float | None = 30.0) -> RecordResult:
        return self.submit(record).result(timeout)

    def close(self) -> None:
        """Write everything already submitted, then stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = []
            stop = item is _STOP
            if not stop:
                batch.append(item)
            deadline = time.monotonic() + (self.linger_s if self._last_batch > 1 else 0.0)
            while len(batch) < self.max_batch and not stop:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
            self._last_batch = len(batch)
            if batch:
                try:
                    self._write(batch)
                except BaseException as exc:  # never leave a caller waiting on a dead thread
                    for _, future in batch:
                        _resolve(future, exc=exc)
            if stop:
                return

    def _write(self, batch: list[tuple[InferenceRecord, Future]]) -> None:
        try:
            results = self.ledger.record_inferences([record for record, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _resolve(batch[0][1], exc=exc)
                return
            half = len(batch) // 2
            self._write(batch[:half])
            self._write(batch[half:])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _resolve(future, result=result)


def _resolve(
    future: Future, result: RecordResult | None = None, exc: BaseException | None = None
) -> None:
    """Settle a future unless its caller already cancelled or it was settled."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # cancelled between the check and the call
        pass
