"""The training loop of one training process: DDP over gloo (CPU) or nccl (GPU), the multi-task
loss, early stopping, averaged weights and per-epoch checkpoints. ``training.train_two_tower`` runs it.

Every rank reads its own shard of the examples (``loader``) with the same number of batches, and
takes every decision (stop, best epoch) from values all ranks share, so no rank waits on another.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sparkrec.loader import ParquetConverter, ShardLoader
from sparkrec.models.optimiser import Optimiser, WeightAverage, sparse_tables
from sparkrec.models.ranker import listwise_loss
from sparkrec.models.specs import TrainingInputs, TrainingParams
from sparkrec.models.two_tower import TwoTower, in_batch_softmax_loss


@dataclass(frozen=True)
class Process:
    """This training process: its rank among ``world`` and its device."""

    rank: int
    world: int
    device: torch.device
    placement: list[dict[str, Any]]  # every rank's host, pid and working folder


def train(inputs: TrainingInputs, output_dir: str, params: TrainingParams) -> dict[str, Any]:
    """Train the two-tower model (and its ranker, with ``inputs.lists``) in this process.

    Rank 0 writes ``weights.pt`` and ``history.json`` to ``output_dir`` and, with
    ``params.checkpoint_dir``, ``last.pt`` (weights, optimiser, epoch, history) there after every
    epoch; a run that finds one resumes after its epoch (every rank loads it).

    Returns:
        Per-epoch mean retrieval ``loss``, ``rank_loss`` (with ranking lists), ``val_loss`` (with early
        stopping) and examples/s (losses averaged over ranks), ``best_epoch``, ``resumed_from`` (0: a
        fresh start) and ``placement``.
    """
    process = start_process(params)
    model = build_model(inputs, params, process.device, process.world)
    run = Run(model, inputs, params, process)
    start = run.resume()
    for epoch in range(start, params.train.epochs):
        if run.stopped_early(epoch):
            break  # a resumed run that had already stopped
        if run.end_epoch(epoch, run.train_epoch(epoch)):
            break
    return run.finish(output_dir, start)


def start_process(params: TrainingParams) -> Process:
    """Join the process group, take this rank's share of the cores, seed torch."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = params.train.use_gpu and torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if use_cuda else "cpu")
    if world > 1:
        timeout = datetime.timedelta(seconds=params.train.timeout_s)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    # Each rank owns a share of the cores: its task's cores in an executor, else the machine's split.
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    torch.set_num_threads(params.threads or max(1, (os.cpu_count() or 1) // local))
    torch.manual_seed(params.train.seed)
    placement = _placement(world)
    if rank == 0:
        where = "; ".join(f"rank {r} pid {p['pid']} on {p['host']} in {p['cwd']}" for r, p in enumerate(placement))
        print(f"[train] {world} process(es): {where}", flush=True)
    return Process(rank, world, device, placement)


def build_model(inputs: TrainingInputs, params: TrainingParams, device: torch.device, world: int = 1) -> TwoTower:
    """The two-tower model (with a ranker when there are lists) over the vocabulary's item matrices.

    Its item ID table has sparse gradients (averaged over CPU processes by ``average_sparse_grads``),
    except across several GPUs, where the table is dense and DDP all-reduces it with NCCL.
    """
    model, ranker = params.train.model, params.train.ranker
    item_text = torch.from_numpy(np.load(inputs.item_text))
    attrs = torch.from_numpy(np.load(inputs.item_attrs)) if inputs.item_attrs else None
    extra = torch.from_numpy(np.load(inputs.item_extra)) if inputs.item_extra else None
    shape = {"hidden": ranker.hidden, "cross_layers": ranker.cross_layers, "recent": ranker.recent_days > 0}
    return TwoTower(
        item_text,
        model.dim,
        model.history_length,
        model.dropout,
        item_attrs=attrs,
        attr_codes=inputs.attr_codes,
        text=model.text,
        history_attention=model.history_attention,
        ranker=shape if inputs.lists else None,
        ranker_trains_towers=ranker.train_towers,
        item_extra=extra,
        extra_dims=inputs.extra_dims,
        event_types=len(inputs.event_types),
        user_features=len(inputs.user_features),
        sparse_ids=device.type == "cpu" or world == 1,
    ).to(device)


class Run:
    """One training run's state across epochs: the loaders, the optimiser, the averaged weights, the
    per-epoch history, the best epoch (early stopping) and the checkpoint."""

    def __init__(self, model: TwoTower, inputs: TrainingInputs, params: TrainingParams, process: Process) -> None:
        train = params.train
        self.model, self.params, self.process = model, params, process
        self.log_q: torch.Tensor | None = torch.from_numpy(np.load(inputs.log_q)).float().to(process.device)
        if not train.model.logq_correction:
            self.log_q = None  # an ablation: no candidate is corrected for how often it is drawn
        self.vocabulary = int(model.item_text.shape[0]) - 1
        self.trained = _data_parallel(model) if process.world > 1 else model
        self.optimiser = Optimiser(model, train.learning_rate)
        self.loader = ParquetConverter.from_json(inputs.examples).make_torch_dataloader(
            train.batch_size, cur_shard=process.rank, shard_count=process.world, shuffle_seed=train.seed
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"rank {process.rank}: {ParquetConverter.from_json(inputs.examples).num_rows} examples give no full "
                f"batch of {train.batch_size} over {process.world} processes; lower train.batch_size"
            )
        self.validation = _validation_loader(inputs, train.batch_size, process) if train.patience > 0 else None
        self.lists = _lists_loader(inputs, train.ranker.batch_size, process, train.seed)
        self.history: dict[str, list[float]] = {"loss": [], "examples_per_s": []}
        if self.lists is not None:
            self.history["rank_loss"] = []
        if self.validation is not None:
            self.history["val_loss"] = []
        self.best: dict[str, Any] = {"loss": float("inf"), "epoch": 0, "state": None}
        self.average = WeightAverage(model, train.weight_average)
        self.checkpoint = Path(params.checkpoint_dir) / "last.pt" if params.checkpoint_dir else None

    def resume(self) -> int:
        """The epoch to start after: the checkpoint's, when there is one (0: a fresh start)."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        saved = torch.load(self.checkpoint, map_location=self.process.device, weights_only=True)
        self.model.load_state_dict(saved["model"])
        self.optimiser.load_state_dict(saved["optimiser"])
        start, self.history, self.best = int(saved["epoch"]), saved["history"], saved["best"]
        self.average.load_state_dict(saved.get("average"), self.model)
        torch.set_rng_state(saved["rng"])  # dropout continues as if never interrupted
        if self.process.rank == 0:
            print(f"[train] resuming after epoch {start} from {self.checkpoint}", flush=True)
        return start

    def stopped_early(self, epoch: int) -> bool:
        patience = self.params.train.patience
        return self.validation is not None and self.best["state"] is not None and epoch - self.best["epoch"] >= patience

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over this rank's examples (each step also takes a batch of ranking lists, cycled and
        reshuffled each pass); returns [mean retrieval loss, examples/s, mean ranking loss] over ranks."""
        train, device = self.params.train, self.process.device
        self.loader.set_epoch(epoch)
        self.trained.train()
        started, total, steps, rank_total, rank_steps = time.perf_counter(), 0.0, 0, 0.0, 0
        lists = _cycle(self.lists, epoch)
        sampled = train.model.sampled_negatives  # uniform negatives per step, beside the in-batch ones
        for batch in self.loader:
            ranking = {k: v.to(device) for k, v in next(lists).items()} if self.lists is not None else None
            target = batch["target"].to(device)
            negatives = torch.randint(1, self.vocabulary + 1, (sampled,), device=device) if sampled else None
            users, items, rank_out = self.trained(
                batch["history"].to(device), target, ranking, negatives, *_user_inputs(batch, device)
            )
            retrieval_loss = in_batch_softmax_loss(
                users, items, target, train.model.temperature, None if self.log_q is None else self.log_q[target],
                negatives, math.log(max(sampled, 1) / self.vocabulary),
            )  # fmt: skip
            loss = retrieval_loss
            if rank_out is not None and ranking is not None:  # the multi-task loss
                rank_loss = listwise_loss(rank_out, ranking["labels"].float(), ranking["candidates"] > 0)
                loss = retrieval_loss + train.ranker.weight * rank_loss
                rank_total += float(rank_loss.detach())
                rank_steps += 1
            self.optimiser.zero_grad()
            loss.backward()
            if self.process.world > 1:
                average_sparse_grads(self.model, self.process.world)
            touched = self.average.catch_up(self.model)
            self.optimiser.step()
            self.average.update(self.model, touched)
            total += float(retrieval_loss.detach())
            steps += 1
        elapsed = time.perf_counter() - started
        stats = torch.tensor(
            [total / steps, steps * self.loader.batch_size / elapsed, rank_total / max(rank_steps, 1)],
            dtype=torch.float64,
        )
        if self.process.world > 1:
            dist.all_reduce(stats)
            stats[0] /= self.process.world  # mean losses; examples/s summed over ranks
            stats[2] /= self.process.world
        return stats

    def end_epoch(self, epoch: int, stats: torch.Tensor) -> bool:
        """Record the epoch, validate, print its line, checkpoint; whether to stop early."""
        train = self.params.train
        self.history["loss"].append(float(stats[0]))
        self.history["examples_per_s"].append(float(stats[1]))
        if self.lists is not None:
            self.history["rank_loss"].append(float(stats[2]))
        note, stop = "", False
        if self.validation is not None:
            # every rank gets the same mean, so every rank takes the same decision
            with self.average.applied(self.model):
                val = _validation_loss(self.model, self.validation, self.params, self.log_q, self.process)
                if val < self.best["loss"]:
                    state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    self.best = {"loss": val, "epoch": epoch + 1, "state": state}
            self.history["val_loss"].append(val)
            stop = epoch + 1 - self.best["epoch"] >= train.patience
            note = f" val_loss {val:.4f} (best {self.best['loss']:.4f} at epoch {self.best['epoch']})"
        if self.process.rank == 0:
            ranking = f" ranking loss {stats[2]:.4f}" if self.lists is not None else ""
            print(
                f"[train] epoch {epoch + 1}/{train.epochs} loss {stats[0]:.4f} "
                f"{stats[1]:.0f} examples/s over {self.process.world} process(es){ranking}{note}",
                flush=True,
            )
            sys.stdout.flush()
            if self.checkpoint is not None:
                _save_checkpoint(self.checkpoint, self._checkpoint_state(epoch + 1))
        if stop and self.process.rank == 0:
            print(
                f"[train] early stop: validation loss has not improved for {train.patience} epoch(s); "
                f"keeping epoch {self.best['epoch']}",
                flush=True,
            )
        return stop

    def _checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "history": self.history,
            "rng": torch.get_rng_state(),
            "best": self.best,
            "average": self.average.state_dict(self.model),
        }

    def finish(self, output_dir: str, start: int) -> dict[str, Any]:
        """Keep the best epoch's weights (early stopping) or the averaged ones; rank 0 writes them."""
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
            self.history["best_epoch"] = [float(self.best["epoch"])]
        else:
            self.average.copy_to(self.model)
        if self.process.rank == 0:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(self.model.state_dict(), out / "weights.pt")
            (out / "history.json").write_text(json.dumps(self.history))
        if self.process.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return {**self.history, "resumed_from": start, "placement": self.process.placement}


def _data_parallel(model: TwoTower) -> torch.nn.Module:
    """``model`` under DDP, its buffers (the item matrices: items x text size, read from the same files
    by every rank) never sent again after the start. DDP's default broadcasts every buffer from rank
    0 before each forward pass: the whole text matrix at every step, a cost that grows with the
    catalogue (150 MB a step at 100,000 items).

    The tables with sparse gradients are left out of DDP and averaged by ``average_sparse_grads``:
    gloo's sparse all-reduce, which DDP would use, crashed ranks (SIGSEGV, SIGABRT) part-way through
    epochs at 100,000 items. Rank 0's tables are sent once here, as DDP sends the other parameters."""
    tables = sparse_tables(model)
    ddp = torch.nn.parallel.DistributedDataParallel
    if tables:
        ddp._set_params_and_buffers_to_ignore_for_model(model, list(tables))
        for table in tables.values():
            dist.broadcast(table.data, 0)
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:  # torch >= 2.15
        return ddp(model, forward_sync_buffers=False)
    return ddp(model, broadcast_buffers=False)


def average_sparse_grads(model: torch.nn.Module, world: int) -> None:
    """Average the sparse gradients of ``model``'s tables over the ``world`` ranks, as DDP averages
    the dense ones, with plain all-gathers of fixed size: every rank's row count, then its rows and
    their values padded to the longest. The result is coalesced (each row once). A rank whose batch
    touched no row (padding only) sends none."""
    for table in sparse_tables(model).values():
        grad = table.grad
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.zeros((1, 0), dtype=torch.long), table.new_zeros((0, *table.shape[1:])), table.shape
            )
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([len(rows)]))
        sizes = [int(c) for c in counts]
        longest = max(sizes)
        if longest == 0:
            table.grad = grad
            continue
        rows = torch.nn.functional.pad(rows, (0, longest - len(rows)))
        values = torch.nn.functional.pad(values, (0, 0, 0, longest - len(values)))
        every_rows, every_values = [torch.empty_like(rows) for _ in sizes], [torch.empty_like(values) for _ in sizes]
        dist.all_gather(every_rows, rows)
        dist.all_gather(every_values, values)
        rows = torch.cat([r[:n] for r, n in zip(every_rows, sizes, strict=True)])
        values = torch.cat([v[:n] for v, n in zip(every_values, sizes, strict=True)]) / world
        table.grad = torch.sparse_coo_tensor(rows[None], values, table.shape).coalesce()


def _placement(world: int) -> list[dict[str, Any]]:
    """Where every rank runs (host, pid, working folder): on a cluster, the executors' task folders."""
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd()}
    if world == 1:
        return [mine]
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def _lists_loader(inputs: TrainingInputs, batch_size: int, process: Process, seed: int) -> ShardLoader | None:
    """This rank's shard of the ranking lists (None: no ranker)."""
    if not inputs.lists:
        return None
    advice = "ranking lists are too few", "use more data or set train.ranker.enabled: false"
    return _shard(inputs.lists, batch_size, process, seed, 1, advice)


def _shard(
    converter_json: str, batch_size: int, process: Process, seed: int, least: int, advice: tuple[str, str]
) -> ShardLoader:
    """This rank's shard of a Parquet converter, batches no larger than the shard; fewer than ``least``
    rows per rank is an error saying ``advice`` (what is wrong, what to do)."""
    converter = ParquetConverter.from_json(converter_json)
    per_rank = converter.num_rows // process.world
    if per_rank < least:
        raise ValueError(f"{converter.num_rows} {advice[0]} for {process.world} process(es); {advice[1]}")
    return converter.make_torch_dataloader(
        min(batch_size, per_rank), cur_shard=process.rank, shard_count=process.world, shuffle_seed=seed
    )


def _cycle(loader: ShardLoader | None, epoch: int) -> Iterator[dict[str, Any]]:
    """Batches of ``loader`` without end, each pass in a new order (seeded by epoch and pass)."""
    if loader is None:
        return iter(())

    def batches() -> Iterator[dict[str, Any]]:
        for n in itertools.count():
            loader.set_epoch(epoch * 1000 + n)
            yield from loader

    return batches()


def _validation_loader(inputs: TrainingInputs, batch_size: int, process: Process) -> ShardLoader:
    """This rank's shard of the validation examples, batches no larger than the shard allows."""
    if not inputs.validation:
        raise ValueError("early stopping needs validation examples (inputs.validation)")
    advice = "validation examples are too few", "raise train.validation_fraction or set train.patience: 0"
    return _shard(inputs.validation, batch_size, process, 0, 2, advice)


def _validation_loss(
    model: TwoTower, loader: ShardLoader, params: TrainingParams, log_q: torch.Tensor | None, process: Process
) -> float:
    """Mean retrieval loss over the validation examples of every rank."""
    model.eval()
    total, steps = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            target = batch["target"].to(process.device)
            history = batch["history"].to(process.device)
            users, items, _ = model(history, target, None, None, *_user_inputs(batch, process.device))
            q = None if log_q is None else log_q[target]
            total += float(in_batch_softmax_loss(users, items, target, params.train.model.temperature, q))
            steps += 1
    stats = torch.tensor([total, float(steps)], dtype=torch.float64)
    if process.world > 1:
        dist.all_reduce(stats)
    return float(stats[0]) / max(float(stats[1]), 1.0)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a rank killed mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _user_inputs(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The batch's history event type codes and user features on ``device`` (None: examples written
    without them)."""
    types, features = (batch[k].to(device) if k in batch else None for k in ("history_types", "user_features"))
    return types, features
