"""FLOAT off the control loop: a background thread fed through a small bounded queue.

The control loop calls `submit` once per executed chunk and never waits: if the worker is
behind and the queue is full, the feature is dropped and counted (`dropped`), and the index
stays at its last value. `index` and `fired` are read without locking (a float and a bool).
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from monitor.float_detector import FloatDetector

QUEUE_SIZE = 4


class FloatWorker:
    def __init__(self, detector: FloatDetector, on_index=None):
        self.detector = detector
        self.on_index = on_index  # called on the worker thread with (chunk number, index)
        self.index = 0.0
        self.fired = False
        self.processed = self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="float-worker", daemon=True)
        self._thread.start()

    def start_episode(self) -> None:
        self._put(("reset", None))

    def submit(self, feature: np.ndarray) -> bool:
        """Queues one chunk's feature; False if it had to be dropped."""
        return self._put(("chunk", feature))

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
        chunks = 0
        first = True
        while True:
            kind, payload = self._queue.get()
            if kind == "stop":
                return
            if kind == "mark":
                payload.set()
            elif kind == "reset":
                chunks, first = 0, True
                self.index, self.fired = 0.0, False
            else:
                if first:
                    self.detector.reset(payload)
                    first = False
                self.index = self.detector.update(payload)
                self.fired = self.fired or self.detector.fired
                chunks += 1
                self.processed += 1
                if self.on_index is not None:
                    self.on_index(chunks, self.index)
