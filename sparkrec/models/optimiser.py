"""What a training step updates: the optimiser (Adam, lazy Adam for the tables with sparse
gradients) and the exponential moving average of the weights that training keeps."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch


class Optimiser:
    """Adam over the dense parameters and lazy Adam (``torch.optim.SparseAdam``) over the tables with
    sparse gradients (the item IDs): a step updates the rows its batch touched and their moments,
    so its cost does not grow with the catalogue. Dense Adam would also move every untouched row on
    its momentum at every step: items x dim of work per step."""

    def __init__(self, model: torch.nn.Module, learning_rate: float) -> None:
        sparse = {id(p): p for p in sparse_tables(model).values()}
        dense = [p for p in model.parameters() if id(p) not in sparse]
        self.parts: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=learning_rate)]
        self.sparse = list(sparse.values())
        if self.sparse and learning_rate > 0:  # SparseAdam refuses a rate of 0; a rate of 0 moves nothing
            self.parts.append(torch.optim.SparseAdam(self.sparse, lr=learning_rate))

    def zero_grad(self) -> None:
        for part in self.parts:
            part.zero_grad()
        for param in self.sparse:
            param.grad = None

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parts = state.get("parts")
        if parts is None or len(parts) != len(self.parts):
            print("[train] the checkpoint's optimiser state has another layout: it starts afresh", flush=True)
            return
        for part, saved in zip(self.parts, parts, strict=True):
            part.load_state_dict(saved)


def sparse_tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The embedding tables of ``model`` whose gradients are sparse, by parameter name."""
    return {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Embedding) and module.sparse
    }


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging), updated after every
    optimiser step: ``shadow = d * shadow + (1 - d) * weights``.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after t updates, so a short run is not
    pulled back to its initial weights. ``decay`` 0 keeps nothing: every method is then a no-op and the
    model keeps its last weights. Every DDP rank holds the same weights, so each keeps its own copy.

    A table with sparse gradients is averaged lazily, and exactly: a row no step has changed since
    its last update holds the same weight w all along, so its average after steps with decays
    d_1..d_n is ``w + d_1...d_n (shadow - w)``. Each row keeps the log of that product's start
    (``_since``); ``catch_up`` brings the rows a step will change up to date before the step, and
    reading the average brings all of them. A step then costs the rows it touched, not the table.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.weight_average must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()} if decay else {}
        self._log_decay = 0.0  # the sum of log(decay) over every update so far (float64)
        self._since: dict[str, torch.Tensor] = {}
        self._reset_rows(model)

    def _reset_rows(self, model: torch.nn.Module) -> None:
        """Every row of the sparse tables up to date (``shadow`` exact): the decay sums start again."""
        self._log_decay = 0.0
        self._since = {
            n: torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
            for n, p in sparse_tables(model).items()
            if self.decay
        }

    def catch_up(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Before an optimiser step: bring the sparse tables' rows the step will change (those its
        gradient holds) up to date; returns those rows by table."""
        touched: dict[str, torch.Tensor] = {}
        if not self._since:
            return touched
        params = dict(model.named_parameters())
        for name, since in self._since.items():
            grad = params[name].grad
            if grad is None:
                continue
            rows = grad.coalesce().indices()[0] if grad.is_sparse else torch.arange(len(since), device=since.device)
            self._catch_up_rows(name, params[name], rows)
            touched[name] = rows
        return touched

    def _catch_up_rows(self, name: str, param: torch.nn.Parameter, rows: torch.Tensor) -> None:
        since = self._since[name]
        factor = torch.exp(self._log_decay - since[rows]).to(param.dtype).unsqueeze(-1)
        with torch.no_grad():
            weights = param.detach()[rows]
            self.shadow[name][rows] = weights + factor * (self.shadow[name][rows] - weights)
        since[rows] = self._log_decay

    def update(self, model: torch.nn.Module, touched: dict[str, torch.Tensor] | None = None) -> None:
        """After an optimiser step; ``touched``: what ``catch_up`` returned before it (the rows of the
        sparse tables the step changed; the others are averaged later, exactly)."""
        if not self.decay:
            return
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self._log_decay += math.log(keep)
        touched = touched or {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name not in self._since:
                    self.shadow[name].lerp_(param.detach(), 1.0 - keep)
                elif name in touched:
                    rows = touched[name]
                    self.shadow[name][rows] = self.shadow[name][rows].lerp_(param.detach()[rows], 1.0 - keep)
                    self._since[name][rows] = self._log_decay

    def _bring_up_to_date(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, since in self._since.items():
            self._catch_up_rows(name, params[name], torch.arange(len(since), device=since.device))
        self._reset_rows(model)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into ``model``."""
        if self.decay:
            self._bring_up_to_date(model)
            _put(model, self.shadow)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
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

    def state_dict(self, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """The average (brought up to date with ``model``'s weights first, when it has sparse tables)."""
        if model is not None and self._since:
            self._bring_up_to_date(model)
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any] | None, model: torch.nn.Module) -> None:
        """A checkpoint's average; None, or one saved with another decay: started afresh from ``model``."""
        if not self.decay:
            return
        if state is not None and state["decay"] == self.decay:
            self.updates, self.shadow = int(state["updates"]), state["shadow"]
        else:
            self.updates, self.shadow = 0, {n: p.detach().clone() for n, p in model.named_parameters()}
        self._reset_rows(model)


def _put(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (parameter name -> tensor) into ``model``'s parameters."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])
