"""The training loop, run by TorchDistributor in each rank (or in-process for one rank).

``train_two_tower`` is top-level, imports torch inside, takes paths and small arguments, and
returns only small results; the examples reach each rank through the Parquet converter.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


class TrainingFailedError(RuntimeError):
    """A training process failed; the checkpoint of its last finished epoch (if any) is kept."""


def checkpoint_epoch(checkpoint_dir: str) -> int:
    """The last epoch saved under ``checkpoint_dir`` (0: none)."""
    import torch

    path = Path(checkpoint_dir) / "last.pt"
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def train_two_tower(data: dict[str, Any], output_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """``_train`` in one rank; an error is also written to ``<output_dir>/error-rank<N>.txt`` (TorchDistributor
    reports only that a process failed), so the driver can say what went wrong."""
    try:
        return _train(data, output_dir, params)
    except BaseException as err:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"error-rank{os.environ.get('RANK', '0')}.txt").write_text(f"{type(err).__name__}: {err}")
        raise


def rank_errors(output_dir: str, world: int) -> list[str]:
    """What the failed ranks wrote, rank order; ranks that wrote nothing while others did died outside
    Python (killed, out of memory) and come first."""
    written = {int(p.stem.removeprefix("error-rank")): p.read_text() for p in Path(output_dir).glob("error-rank*.txt")}
    if not written:
        return []
    silent = [r for r in range(world) if r not in written]
    died = (
        [f"rank {', '.join(map(str, silent))} died without a Python error (killed or out of memory)"] if silent else []
    )
    return died + [f"rank {r}: {written[r]}" for r in sorted(written)]


def _train(data: dict[str, Any], output_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """Train the two-tower model with DDP over gloo (CPU) or nccl (GPU).

    Args:
        data: ``converter`` (ParquetConverter JSON of the examples), ``item_text`` and ``log_q``
            (.npy paths: text vectors [V + 1, T] and log target frequency [V + 1] per item index);
            optionally ``lists`` (the ranker's training lists, ``ranker.training_lists``): each step
            then also scores a batch of them and minimises L_retrieval + ranker_weight * L_ranking.
        output_dir: where rank 0 writes ``weights.pt`` and ``history.json``.
        params: model and optimiser settings (TrainConfig and ModelConfig fields); with
            ``checkpoint_dir``, rank 0 writes ``last.pt`` (weights, optimiser, epoch, history) there after
            every epoch, and a run that finds one resumes after its epoch (every rank loads it).

    Returns:
        Per-epoch mean retrieval ``loss``, ``rank_loss`` (with ranking lists) and examples/s (rank 0's
        view; losses are averaged over ranks), and ``resumed_from`` (the epoch a checkpoint gave, 0 for
        a fresh start).
    """
    import datetime

    import numpy as np
    import torch
    import torch.distributed as dist

    from sparkrec.loader import ParquetConverter
    from sparkrec.models.ranker import listwise_loss
    from sparkrec.models.two_tower import TwoTower, in_batch_softmax_loss

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = bool(params.get("use_gpu")) and torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if use_cuda else "cpu")
    if world > 1:
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=int(params["timeout_s"]))
        )
    # Each rank owns a share of the cores: its task's cores in an executor, else the machine's split.
    threads = int(params.get("threads") or 0)
    torch.set_num_threads(
        threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    )
    torch.manual_seed(int(params["seed"]))
    placement = _placement(world)
    if rank == 0:
        print(
            f"[train] {world} process(es): "
            + "; ".join(f"rank {r} pid {p['pid']} on {p['host']} in {p['cwd']}" for r, p in enumerate(placement)),
            flush=True,
        )

    item_text = torch.from_numpy(np.load(data["item_text"]))
    log_q = torch.from_numpy(np.load(data["log_q"])).float().to(device)
    attrs = torch.from_numpy(np.load(data["item_attrs"])) if data.get("item_attrs") else None
    extra = torch.from_numpy(np.load(data["item_extra"])) if data.get("item_extra") else None
    model = TwoTower(
        item_text,
        int(params["dim"]),
        int(params["history_length"]),
        float(params["dropout"]),
        item_attrs=attrs,
        attr_codes=int(data.get("attr_codes") or 0),
        text=bool(params.get("text", True)),
        history_attention=bool(params.get("history_attention", True)),
        ranker=ranker_shape(params) if data.get("lists") else None,
        ranker_trains_towers=bool(params.get("ranker_train_towers", False)),
        item_extra=extra,
        extra_dims=tuple(data.get("extra_dims") or ()),
        event_types=len(data.get("event_types") or ()),
        user_features=len(data.get("user_features") or ()),
    ).to(device)
    vocabulary = item_text.shape[0] - 1
    sampled = int(params.get("sampled_negatives") or 0)  # uniform negatives per step, beside the in-batch ones
    if not params.get("logq_correction", True):
        log_q = None  # an ablation: no candidate is corrected for how often it is drawn
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimiser = torch.optim.Adam(trained.parameters(), lr=float(params["learning_rate"]))
    converter = ParquetConverter.from_json(data["converter"])
    loader = converter.make_torch_dataloader(
        int(params["batch_size"]), cur_shard=rank, shard_count=world, shuffle_seed=int(params["seed"])
    )
    if len(loader) == 0:
        raise ValueError(
            f"rank {rank}: {converter.num_rows} examples give no full batch of {params['batch_size']} "
            f"over {world} processes; lower train.batch_size"
        )
    epochs = int(params["epochs"])
    patience = int(params.get("patience") or 0)
    validation = _validation_loader(data, int(params["batch_size"]), rank, world) if patience > 0 else None
    lists_loader = _lists_loader(data, int(params.get("ranker_batch_size") or 32), rank, world, int(params["seed"]))
    history: dict[str, list[float]] = {"loss": [], "examples_per_s": []}
    if lists_loader is not None:
        history["rank_loss"] = []
    if validation is not None:
        history["val_loss"] = []
    best: dict[str, Any] = {"loss": float("inf"), "epoch": 0, "state": None}
    average = WeightAverage(model, float(params.get("weight_average") or 0.0))
    checkpoint = Path(params["checkpoint_dir"]) / "last.pt" if params.get("checkpoint_dir") else None
    start = 0
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        start, history, best = int(saved["epoch"]), saved["history"], saved["best"]
        average.load_state_dict(saved.get("average"), model)
        torch.set_rng_state(saved["rng"])  # dropout continues as if never interrupted
        if rank == 0:
            print(f"[train] resuming after epoch {start} from {checkpoint}", flush=True)
    for epoch in range(start, epochs):
        if validation is not None and best["state"] is not None and epoch - best["epoch"] >= patience:
            break  # a resumed run that had already stopped
        loader.set_epoch(epoch)
        trained.train()
        started, total, steps = time.perf_counter(), 0.0, 0
        lists = _cycle(lists_loader, epoch)
        rank_total, rank_steps = 0.0, 0
        for batch in loader:
            # every step also takes a batch of ranking lists (the lists are cycled, reshuffled each pass)
            ranking = {k: v.to(device) for k, v in next(lists).items()} if lists_loader is not None else None
            target = batch["target"].to(device)
            negatives = torch.randint(1, vocabulary + 1, (sampled,), device=device) if sampled else None
            users, items, rank_out = trained(
                batch["history"].to(device), target, ranking, negatives, *_user_inputs(batch, device)
            )
            retrieval_loss = in_batch_softmax_loss(
                users,
                items,
                target,
                float(params["temperature"]),
                None if log_q is None else log_q[target],
                negatives,
                math.log(max(sampled, 1) / vocabulary),
            )
            loss = retrieval_loss
            if rank_out is not None and ranking is not None:  # the multi-task loss
                rank_loss = listwise_loss(rank_out, ranking["labels"].float(), ranking["candidates"] > 0)
                loss = retrieval_loss + float(params["ranker_weight"]) * rank_loss
                rank_total += float(rank_loss.detach())
                rank_steps += 1
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            average.update(model)
            total += float(retrieval_loss.detach())
            steps += 1
        elapsed = time.perf_counter() - started
        stats = torch.tensor(
            [total / steps, steps * loader.batch_size / elapsed, rank_total / max(rank_steps, 1)], dtype=torch.float64
        )
        if world > 1:
            dist.all_reduce(stats)
            stats[0] /= world  # mean losses; examples/s summed over ranks
            stats[2] /= world
        history["loss"].append(float(stats[0]))
        history["examples_per_s"].append(float(stats[1]))
        if lists_loader is not None:
            history["rank_loss"].append(float(stats[2]))
        note = ""
        stop = False
        if validation is not None:
            # every rank gets the same mean, so every rank takes the same decision
            with average.applied(model):
                val = _validation_loss(model, validation, params, log_q, device, world)
                if val < best["loss"]:
                    best = {
                        "loss": val,
                        "epoch": epoch + 1,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
            history["val_loss"].append(val)
            stop = epoch + 1 - best["epoch"] >= patience
            note = f" val_loss {val:.4f} (best {best['loss']:.4f} at epoch {best['epoch']})"
        if rank == 0:
            print(
                f"[train] epoch {epoch + 1}/{epochs} loss {stats[0]:.4f} "
                f"{stats[1]:.0f} examples/s over {world} process(es)"
                + (f" ranking loss {stats[2]:.4f}" if lists_loader is not None else "")
                + note,
                flush=True,
            )
            sys.stdout.flush()
            if checkpoint is not None:
                _save_checkpoint(
                    checkpoint,
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "history": history,
                        "rng": torch.get_rng_state(),
                        "best": best,
                        "average": average.state_dict(),
                    },
                )
        if stop:
            if rank == 0:
                print(
                    f"[train] early stop: validation loss has not improved for {patience} epoch(s); "
                    f"keeping epoch {best['epoch']}",
                    flush=True,
                )
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        history["best_epoch"] = [float(best["epoch"])]
    else:
        average.copy_to(model)
    if rank == 0:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / "weights.pt")
        (out / "history.json").write_text(json.dumps(history))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {**history, "resumed_from": start, "placement": placement}


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging), updated after every
    optimiser step: ``shadow = d * shadow + (1 - d) * weights``.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after t updates, so a short run is not
    pulled back to its initial weights. ``decay`` 0 keeps nothing: every method is then a no-op and the
    model keeps its last weights. Every DDP rank holds the same weights, so each keeps its own copy.
    """

    def __init__(self, model: Any, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.weight_average must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()} if decay else {}

    def update(self, model: Any) -> None:
        if not self.decay:
            return
        import torch

        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for name, param in model.named_parameters():
                self.shadow[name].lerp_(param.detach(), 1.0 - keep)

    def copy_to(self, model: Any) -> None:
        """Put the averaged weights into ``model``."""
        if self.decay:
            _put(model, self.shadow)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Any:
        """``model`` holds the averaged weights inside the block, its own weights again after it."""
        if not self.decay:
            yield model
            return
        own = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            _put(model, own)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any] | None, model: Any) -> None:
        """A checkpoint's average; None, or one saved with another decay: started afresh from ``model``."""
        if not self.decay:
            return
        if state is not None and state["decay"] == self.decay:
            self.updates, self.shadow = int(state["updates"]), state["shadow"]
        else:
            self.updates, self.shadow = 0, {n: p.detach().clone() for n, p in model.named_parameters()}


def _put(model: Any, weights: dict[str, Any]) -> None:
    """Copy ``weights`` (parameter name -> tensor) into ``model``'s parameters."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])


def _placement(world: int) -> list[dict[str, Any]]:
    """Where every rank runs (host, pid, working folder): on a cluster, the executors' task folders."""
    import socket

    import torch.distributed as dist

    mine = {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd()}
    if world == 1:
        return [mine]
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def ranker_shape(params: dict[str, Any]) -> dict[str, Any]:
    """The ranker's shape (``DCNRanker`` arguments) from the flat training params."""
    return {
        "hidden": int(params.get("ranker_hidden", 0)),
        "cross_layers": int(params.get("ranker_cross_layers", 2)),
        "recent": int(params.get("ranker_recent_days", 0)) > 0,
    }


def _lists_loader(data: dict[str, Any], batch_size: int, rank: int, world: int, seed: int) -> Any:
    """This rank's shard of the ranking lists (None: no ranker), batches no larger than the shard."""
    from sparkrec.loader import ParquetConverter

    if not data.get("lists"):
        return None
    converter = ParquetConverter.from_json(data["lists"])
    per_rank = converter.num_rows // world
    if per_rank < 1:
        raise ValueError(
            f"{converter.num_rows} ranking lists are too few for {world} process(es); "
            "use more data or set train.ranker.enabled: false"
        )
    return converter.make_torch_dataloader(
        min(batch_size, per_rank), cur_shard=rank, shard_count=world, shuffle_seed=seed
    )


def _cycle(loader: Any, epoch: int) -> Any:
    """Batches of ``loader`` without end, each pass in a new order (seeded by epoch and pass)."""
    if loader is None:
        return iter(())

    def batches() -> Any:
        for n in itertools.count():
            loader.set_epoch(epoch * 1000 + n)
            yield from loader

    return batches()


def _validation_loader(data: dict[str, Any], batch_size: int, rank: int, world: int) -> Any:
    """This rank's shard of the validation examples, batches no larger than the shard allows."""
    from sparkrec.loader import ParquetConverter

    if not data.get("validation"):
        raise ValueError("early stopping needs validation examples (data['validation'])")
    converter = ParquetConverter.from_json(data["validation"])
    per_rank = converter.num_rows // world
    if per_rank < 2:
        raise ValueError(
            f"{converter.num_rows} validation examples are too few for {world} process(es); "
            "raise train.validation_fraction or set train.patience: 0"
        )
    return converter.make_torch_dataloader(min(batch_size, per_rank), cur_shard=rank, shard_count=world, shuffle_seed=0)


def _validation_loss(model: Any, loader: Any, params: dict[str, Any], log_q: Any, device: Any, world: int) -> float:
    """Mean retrieval loss over the validation examples of every rank."""
    import torch
    import torch.distributed as dist

    from sparkrec.models.two_tower import in_batch_softmax_loss

    model.eval()
    total, steps = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            target = batch["target"].to(device)
            users, items, _ = model(batch["history"].to(device), target, None, None, *_user_inputs(batch, device))
            total += float(
                in_batch_softmax_loss(
                    users, items, target, float(params["temperature"]), None if log_q is None else log_q[target]
                )
            )
            steps += 1
    stats = torch.tensor([total, float(steps)], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(stats)
    return float(stats[0] / max(stats[1], 1.0))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a rank killed mid-write leaves the previous checkpoint intact."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _user_inputs(batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
    """The batch's history event type codes and user features on ``device`` (None: examples written
    without them)."""
    return tuple(batch[k].to(device) if k in batch else None for k in ("history_types", "user_features"))
