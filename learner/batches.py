"""Batches assembled off the training thread.

Gathering a batch (sampling windows, stacking their frames or embeddings, tokenising) is numpy
work on the host; the training step is torch work that releases the GIL. `BatchPrefetcher` runs
the first on a thread of its own, `depth` batches ahead, so the step never waits for it while a
core is free. Its batches are drawn from the trainer's current index: when the trainer changes
what a batch is (an index rebuilt for another context, embeddings cached instead of images),
`reset` drops the batches made before, so none of the old kind reaches a step. A batch made
before new data was indexed or labels were recomputed is at most `depth` steps old.

`depth` 0 assembles each batch on the caller's thread (deterministic given the seed: tests).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import torch

from policy.device import pin

Batch = dict[str, torch.Tensor]


class BatchPrefetcher:
    def __init__(self, make_batch: Callable[[], Batch], depth: int = 2, pin_memory: bool = False):
        self.make_batch = make_batch
        self.depth = depth
        self.pin_memory = pin_memory
        self.wait_s = 0.0  # time the consumer spent waiting for (or, inline, making) batches
        self._generation = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _produce(self) -> None:
        while not self._stop.is_set():
            generation = self._generation
            try:
                batch = self._make()
            except BaseException as exc:  # handed to the consumer, which raises it
                self._error = exc
                return
            while not self._stop.is_set():
                try:
                    self._queue.put((generation, batch), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _make(self) -> Batch:
        batch = self.make_batch()
        return pin(batch) if self.pin_memory else batch

    def next(self) -> Batch:
        started = time.perf_counter()
        try:
            if self.depth == 0:
                return self._make()
            if self._thread is None:
                self._thread = threading.Thread(target=self._produce, name="batches", daemon=True)
                self._thread.start()
            while True:
                if self._error is not None:
                    raise RuntimeError("assembling a batch failed") from self._error
                try:
                    generation, batch = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if generation == self._generation:
                    return batch
        finally:
            self.wait_s += time.perf_counter() - started

    def reset(self) -> None:
        """From now on only batches begun after this call are handed out."""
        self._generation += 1
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
