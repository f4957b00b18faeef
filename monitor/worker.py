"""FLOAT off the control loop: a background thread fed through a small bounded queue.

The control loop calls `submit` once per executed chunk and never waits: if the worker is
behind and the queue is full, the feature is dropped and counted (`dropped`), and the index
stays at its last value. `index` and `fired` are read without locking (a float and a bool).
"""

from __future__ import annotations

import queue
import sys
import threading

from monitor.detectors import ChunkSignals, Detector

QUEUE_SIZE = 4
SWITCH_INTERVAL_S = 0.0005


class FloatWorker:
    def __init__(self, detector: Detector, on_index=None):
        self.detector = detector
        self.on_index = on_index  # called on the worker thread with (chunk number, index)
        self.index = 0.0
        self.fired = False
        self.processed = self.dropped = 0
        self.generation = 0  # episodes started; results of an older one are discarded
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        # The control loop must not queue behind this thread for the GIL: a short switch interval
        # (0.5 ms instead of 5) hands the GIL back to the loop thread quickly while OT runs.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="float-worker", daemon=True)
        self._thread.start()

    def start_episode(self, detector: Detector | None = None) -> None:
        """A new episode (and, when given, a new detector: another task, version or threshold).
        From now on `index` reads 0 until a chunk of the new episode is scored, even if chunks of
        the old one are still in the queue. Blocks for at most a moment if the queue is full:
        episode starts are not control ticks."""
        self.generation += 1
        self.index, self.fired = 0.0, False
        self._queue.put(("reset", (self.generation, detector)), timeout=5.0)

    def submit(self, signals: ChunkSignals) -> bool:
        """Queues one chunk's signals; False if they had to be dropped."""
        return self._put(("chunk", signals))

    def _put(self, item) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def drain(self, timeout: float = 5.0) -> None:
        """Waits until everything queued is processed (tests and episode ends, never the loop)."""
        done = threading.Event()
        self._queue.put(("mark", done), timeout=timeout)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(("stop", None))
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        chunks, generation = 0, 0
        while True:
            kind, payload = self._queue.get()
            if kind == "stop":
                return
            if kind == "mark":
                payload.set()
            elif kind == "reset":
                chunks = 0
                generation, detector = payload
                if detector is not None:
                    self.detector = detector
                self.detector.reset()
            else:
                index = self.detector.update(payload)
                chunks += 1
                self.processed += 1
                if generation != self.generation:
                    continue  # a newer episode started meanwhile
                self.index = index
                self.fired = self.fired or index > self.detector.tau
                if self.on_index is not None:
                    self.on_index(chunks, index)
