"""The trainer as a process: the learner's spawned child (`trainer_main`) and `fleet train`'s
ranks under torchrun (`train_main`); both run the trainer the algorithm names (`run_trainer`)."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

from learner.algorithms.base import ALGORITHMS
from learner.distributed import DataParallel
from learner.leases import LeaseHeld, StoreLock
from learner.trainer import Trainer, TrainerConfig
from policy.device import resolve_device

log = logging.getLogger("fleetlearn.trainer")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# A second trainer waits this long for the store's lock (a trainer whose learner was just killed
# is on its way out) before it gives up.
STORE_LOCK_WAIT_S = 20.0


def run_trainer(config: TrainerConfig, should_stop) -> None:
    """The trainer the config names, until told to stop. Scaled out, its rank 0 first takes the
    store's trainer lease: one trainer per store."""
    lease = None
    if config.redis_url and DataParallel.current().leader:
        from learner.leases import TrainerLease

        lease = TrainerLease(config.redis_url, wait_s=TrainerLease.TTL_S + 5)
    elif config.data_dir is not None and DataParallel.current().leader:
        lease = StoreLock(config.data_dir, wait_s=STORE_LOCK_WAIT_S)
    try:
        trainer = ALGORITHMS.get(config.algorithm).factory.trainer() or Trainer
        trainer(config).run(should_stop=should_stop)
    finally:
        if lease is not None:
            lease.release()


def die_with_parent() -> None:
    """The learner's trainer ends when the learner does, even by kill -9: Linux sends it SIGKILL
    then (PR_SET_PDEATHSIG); elsewhere a thread notices the new parent within a second."""
    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None else os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.error("the learner is gone; its trainer stops")
        os._exit(1)

    if os.getppid() != parent:  # it went before the signal was set up
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def trainer_main(config: TrainerConfig, stop_event) -> None:
    """Entry point of the spawned trainer process."""
    die_with_parent()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        run_trainer(config, stop_event.is_set)
    except LeaseHeld as exc:
        log.error("trainer not started: %s", exc)
        if config.redis_url is None:  # the embedded lock: its holder is on its way out; the learner tries again
            sys.exit(1)
        # scaled out, another trainer's store: this learner serves without training (exit 0)


def train_main(config, redis_url: str | None = None) -> None:
    """`fleet train`: one rank of the trainer (torchrun sets RANK / WORLD_SIZE), or the only one."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = dataclasses.replace(config, redis_url=redis_url)
    if world > 1:
        backend = "gloo"
        if resolve_device(config.device).type == "cuda":  # one GPU per rank: its LOCAL_RANK's
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            config = dataclasses.replace(config, device=f"cuda:{local}")
            backend = "nccl"
        dist.init_process_group(backend)
        log.info("rank %d of %d (%s, %s)", dist.get_rank(), world, backend, config.device)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        reason = ALGORITHMS.get(config.algorithm).factory.single_rank_reason
        if reason and world > 1:
            raise SystemExit(f"{config.algorithm} trains on one rank: {reason}")
        run_trainer(config, stop.is_set)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
