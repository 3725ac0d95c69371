"""The training function itself, in-process (one rank): determinism under a seed, per-epoch
checkpoints, resuming after the last finished epoch, averaged weights, early stopping, and what the
model learns from planted structure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparkrec.models.optimiser import Optimiser, WeightAverage
from sparkrec.models.training import checkpoint_epoch, train_two_tower
from sparkrec.models.two_tower import TwoTower
from tests.helpers import converter, train_params

VOCAB = 40


def chain(n: int) -> pd.DataFrame:
    """Examples where item i is followed by item i + 1: a structure the model can learn."""
    ids = np.arange(n)
    return pd.DataFrame(
        {"target": ids % (VOCAB - 1) + 2, "history": [[int(i % (VOCAB - 1) + 1), 0, 0, 0] for i in ids]}
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("training")
    rng = np.random.default_rng(0)
    text = np.vstack([np.zeros((1, 6)), rng.standard_normal((VOCAB, 6))]).astype(np.float32)
    np.save(root / "item_text.npy", text)
    np.save(root / "log_q.npy", np.full(VOCAB + 1, np.log(1 / VOCAB), dtype=np.float32))
    return {
        "examples": converter(chain(320), root / "examples"),
        "item_text": str(root / "item_text.npy"),
        "log_q": str(root / "log_q.npy"),
    }


def test_same_seed_same_losses_and_weights(data, tmp_path: Path) -> None:
    first = train_two_tower(data, str(tmp_path / "a"), train_params())
    second = train_two_tower(data, str(tmp_path / "b"), train_params())
    assert first["loss"] == second["loss"] and len(first["loss"]) == 2
    assert first["loss"][1] < first["loss"][0]
    a, b = torch.load(tmp_path / "a" / "weights.pt"), torch.load(tmp_path / "b" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_rerun_resumes_after_the_last_checkpointed_epoch(data, tmp_path: Path, capsys) -> None:
    checkpoints = tmp_path / "checkpoints"
    straight = train_two_tower(data, str(tmp_path / "straight"), train_params(epochs=3))
    partial = train_two_tower(data, str(tmp_path / "partial"), train_params(checkpoints))
    assert checkpoint_epoch(str(checkpoints)) == 2 and partial["resumed_from"] == 0
    resumed = train_two_tower(data, str(tmp_path / "resumed"), train_params(checkpoints, epochs=3))
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert resumed["resumed_from"] == 2 and checkpoint_epoch(str(checkpoints)) == 3
    assert resumed["loss"][:2] == partial["loss"]  # the first two epochs come from the checkpoint
    assert resumed["loss"][2] == pytest.approx(straight["loss"][2], rel=1e-5)  # as if never interrupted
    a, b = torch.load(tmp_path / "straight" / "weights.pt"), torch.load(tmp_path / "resumed" / "weights.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_weight_average_follows_every_step_and_leaves_the_model_its_own_weights() -> None:
    model = torch.nn.Linear(2, 1)
    start = model.weight.detach().clone()
    average = WeightAverage(model, 0.9)
    expected = start.clone()
    for t in range(1, 31):
        with torch.no_grad():
            model.weight.add_(1.0)  # the weights after step t: start + t
        average.update(model)
        keep = min(0.9, (1 + t) / (10 + t))
        expected = keep * expected + (1 - keep) * (start + t)
    assert torch.allclose(average.shadow["weight"], expected)
    assert (expected < start + 30).all() and (
        expected > start + 20
    ).all()  # behind the last step, not stuck at the start
    with average.applied(model):
        assert torch.allclose(model.weight, expected)
    assert torch.allclose(model.weight, start + 30)
    average.copy_to(model)
    assert torch.allclose(model.weight, expected)
    off = WeightAverage(model, 0.0)
    off.update(model)
    off.copy_to(model)
    assert torch.allclose(model.weight, expected)  # decay 0: the model keeps its own weights
    with pytest.raises(ValueError, match="weight_average"):
        WeightAverage(model, 1.0)


def test_averaged_weights_are_saved_and_a_resumed_run_continues_the_average(data, tmp_path: Path) -> None:
    last = train_two_tower(data, str(tmp_path / "last"), train_params(epochs=3))
    straight = train_two_tower(data, str(tmp_path / "straight"), train_params(epochs=3, weight_average=0.9))
    assert straight["loss"] == last["loss"]  # the average does not change what trains
    a, b = torch.load(tmp_path / "last" / "weights.pt"), torch.load(tmp_path / "straight" / "weights.pt")
    assert not all(torch.allclose(a[k], b[k]) for k in a)
    checkpoints = tmp_path / "checkpoints"
    train_two_tower(data, str(tmp_path / "partial"), train_params(checkpoints, weight_average=0.9))
    train_two_tower(data, str(tmp_path / "resumed"), train_params(checkpoints, epochs=3, weight_average=0.9))
    c = torch.load(tmp_path / "resumed" / "weights.pt")
    assert all(torch.allclose(b[k], c[k], atol=1e-6) for k in b)


def test_the_id_table_moves_only_where_a_batch_touched_it_and_its_average_stays_exact() -> None:
    """The item ID table has sparse gradients: a step changes the rows its batch held (lazy Adam), and
    the average of the rows it skipped, caught up later, equals the average taken at every step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(30, 4, padding_idx=0, sparse=True), torch.nn.Linear(4, 1))
    optimiser, average = Optimiser(model, 0.05), WeightAverage(model, 0.9)
    assert [type(p).__name__ for p in optimiser.parts] == ["Adam", "SparseAdam"]
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    for t in range(1, 41):
        rows = torch.randint(0, 30, (5,))
        before = model[0].weight.detach().clone()
        optimiser.zero_grad()
        model(rows).pow(2).sum().backward()
        touched = average.catch_up(model)
        optimiser.step()
        average.update(model, touched)
        untouched = torch.ones(30, dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(model[0].weight[untouched], before[untouched])
        assert not torch.equal(model[0].weight[rows[rows > 0]], before[rows[rows > 0]])
        keep = min(0.9, (1 + t) / (10 + t))
        for name, param in model.named_parameters():
            expected[name] = keep * expected[name] + (1 - keep) * param.detach()
    state = average.state_dict(model)
    assert all(torch.allclose(state["shadow"][n], expected[n], atol=1e-6) for n in expected)
    average.copy_to(model)
    assert all(torch.allclose(p, expected[n], atol=1e-6) for n, p in model.named_parameters())
    still = Optimiser(model, 0.0)  # a rate of 0 (SparseAdam refuses one) moves nothing
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    still.zero_grad()
    model(torch.tensor([1, 2])).sum().backward()
    still.step()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> str:
    return converter(chain(64), tmp_path_factory.mktemp("validation"))


def test_early_stopping_keeps_the_best_epoch(data, validation, tmp_path: Path, capsys) -> None:
    # a learning rate this high overshoots: validation loss stops improving within a few epochs
    params = train_params(epochs=30, patience=2, learning_rate=0.5)
    got = train_two_tower({**data, "validation": validation}, str(tmp_path / "out"), params)
    out = capsys.readouterr().out
    best = int(got["best_epoch"][0])
    assert "early stop" in out and len(got["loss"]) == best + 2 < 30
    assert got["val_loss"][best - 1] == min(got["val_loss"])
    # the saved weights are the best epoch's: a rerun capped at that epoch writes the same ones
    again = train_two_tower(
        {**data, "validation": validation},
        str(tmp_path / "again"),
        train_params(epochs=best, patience=2, learning_rate=0.5),
    )
    assert again["loss"] == got["loss"][:best]
    a, b = torch.load(tmp_path / "out" / "weights.pt"), torch.load(tmp_path / "again" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_needs_validation_examples(data, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="early stopping needs validation examples"):
        train_two_tower(data, str(tmp_path / "out"), train_params(patience=1))


def test_planted_clusters_are_learned_far_above_popularity(tmp_path: Path) -> None:
    """Users consume items of one cluster; popularity favours cluster 0. The model must find the
    clusters from co-occurrence alone (the text vectors are noise)."""
    clusters, size, length = 8, 10, 4
    rng = np.random.default_rng(3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = np.where(rng.random(n) < 0.4, 0, rng.integers(0, clusters, n))  # cluster 0 is popular
        picks = np.stack([rng.choice(size, length + 1, replace=False) for _ in range(n)])
        ids = cluster[:, None] * size + picks + 1
        return ids[:, :length], ids[:, length]

    history, target = draw(4000)
    frame = pd.DataFrame({"target": target.astype(np.int64), "history": [[int(x) for x in h] for h in history]})
    vocab = clusters * size
    np.save(tmp_path / "text.npy", np.vstack([np.zeros((1, 6)), rng.standard_normal((vocab, 6))]).astype(np.float32))
    counts = np.bincount(target, minlength=vocab + 1)[1:] + 1.0
    np.save(tmp_path / "log_q.npy", np.concatenate([[0.0], np.log(counts / counts.sum())]).astype(np.float32))
    data = {
        "examples": converter(frame, tmp_path / "examples"),
        "item_text": str(tmp_path / "text.npy"),
        "log_q": str(tmp_path / "log_q.npy"),
    }
    params = train_params(dim=16, history_length=length, epochs=8, batch_size=64, dropout=0.1)
    train_two_tower(data, str(tmp_path / "out"), params)
    model = TwoTower(torch.from_numpy(np.load(tmp_path / "text.npy")), 16, length).eval()
    model.load_state_dict(torch.load(tmp_path / "out" / "weights.pt"))
    test_history, test_target = draw(500)
    with torch.no_grad():
        items = model.item_vectors(torch.arange(1, vocab + 1))
        mask = torch.ones(500, length, dtype=torch.bool)
        users = model.users(model.item_vectors(torch.from_numpy(test_history)), mask)
        scores = (users @ items.T).numpy()
    popular = np.tile(counts, (500, 1))
    hits = {}
    for name, s in (("model", scores), ("popularity", popular)):
        s = s.copy()
        np.put_along_axis(s, test_history - 1, -np.inf, axis=1)  # seen items removed
        top = np.argsort(-s, axis=1)[:, :5] + 1
        hits[name] = float((top == test_target[:, None]).any(axis=1).mean())
    # hit@5: the target is one of the 6 unseen items of the user's cluster, so finding the cluster
    # gives 5/6; popularity only serves cluster 0's users
    assert hits["model"] > 0.75 and hits["model"] > 2 * hits["popularity"], hits


def test_event_types_let_the_user_tower_tell_purchases_from_views(tmp_path: Path) -> None:
    """Each history is one purchase of the user's cluster and three views of another cluster; the next
    item is a purchase of the first. Only a user tower that reads the event types can tell which
    cluster counts: without them the views outvote the purchase."""
    clusters, size, length = 8, 10, 4
    rng = np.random.default_rng(5)
    vocab = clusters * size

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cluster = rng.integers(0, clusters, n)
        other = (cluster + rng.integers(1, clusters, n)) % clusters
        bought = cluster[:, None] * size + np.stack([rng.choice(size, 2, replace=False) for _ in range(n)]) + 1
        viewed = other[:, None] * size + np.stack([rng.choice(size, 3, replace=False) for _ in range(n)]) + 1
        order = np.argsort(rng.random((n, length)), axis=1)  # the purchase anywhere among the views
        history = np.take_along_axis(np.hstack([bought[:, :1], viewed]), order, axis=1)
        types = np.take_along_axis(np.array([[1, 2, 2, 2]] * n), order, axis=1)  # 1 purchase, 2 view
        return history, types, bought[:, 1]

    history, types, target = draw(4000)
    frame = pd.DataFrame(
        {
            "target": target.astype(np.int64),
            "history": [[int(x) for x in h] for h in history],
            "history_types": [[int(x) for x in k] for k in types],
        }
    )
    np.save(tmp_path / "text.npy", np.vstack([np.zeros((1, 6)), rng.standard_normal((vocab, 6))]).astype(np.float32))
    np.save(tmp_path / "log_q.npy", np.full(vocab + 1, np.log(1 / vocab), dtype=np.float32))
    params = train_params(dim=16, history_length=length, epochs=8, batch_size=64, dropout=0.1)
    test_history, test_types, test_target = draw(500)
    hits = {}
    for name, known in (("with types", ["purchase", "view"]), ("without", [])):
        data = {
            "examples": converter(frame, tmp_path / name / "examples"),
            "item_text": str(tmp_path / "text.npy"),
            "log_q": str(tmp_path / "log_q.npy"),
            "event_types": known,
        }
        train_two_tower(data, str(tmp_path / name / "out"), params)
        model = TwoTower(torch.from_numpy(np.load(tmp_path / "text.npy")), 16, length, event_types=len(known)).eval()
        model.load_state_dict(torch.load(tmp_path / name / "out" / "weights.pt"))
        with torch.no_grad():
            users = model.users(
                model.item_vectors(torch.from_numpy(test_history)),
                torch.ones(500, length, dtype=torch.bool),
                torch.from_numpy(test_types),
            )
            scores = (users @ model.item_vectors(torch.arange(1, vocab + 1)).T).numpy()
        np.put_along_axis(scores, test_history - 1, -np.inf, axis=1)
        hits[name] = float(((np.argsort(-scores, axis=1)[:, :5] + 1) == test_target[:, None]).any(axis=1).mean())
    # hit@5 with the right cluster found: 5 of its 9 unseen items
    assert hits["with types"] > 0.45 and hits["with types"] > 2 * hits["without"], hits


def test_a_run_resumes_from_the_furthest_checkpoint_an_earlier_run_left_and_never_touches_a_live_one(
    tmp_path: Path,
) -> None:
    from sparkrec.trainer import adopt_checkpoint

    key = tmp_path / "fingerprint"
    for run, epoch in (("run-a", 1), ("run-b", 3), ("run-c", 2)):
        (key / run).mkdir(parents=True)
        torch.save({"epoch": epoch}, key / run / "last.pt")
    mine = key / "run-d"
    assert adopt_checkpoint(mine) == key / "run-b"
    assert checkpoint_epoch(str(mine)) == 3
    assert all(checkpoint_epoch(str(key / r)) == e for r, e in (("run-a", 1), ("run-b", 3), ("run-c", 2)))
    assert adopt_checkpoint(tmp_path / "other" / "run-e") is None


SPARSE_RANK = (
    "import sys, torch, torch.distributed as dist\n"
    "from sparkrec.models.loop import _data_parallel, average_sparse_grads\n"
    "folder, rank = sys.argv[1], int(sys.argv[2])\n"
    "dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=2)\n"
    "torch.manual_seed(rank)  # the ranks start apart: rank 0's weights must reach rank 1\n"
    "model = torch.nn.Sequential(torch.nn.Embedding(30, 4, padding_idx=0, sparse=True), torch.nn.Linear(4, 1))\n"
    "trained = _data_parallel(model)\n"
    "grads = []\n"
    "for rows in eval(sys.argv[3]):\n"
    "    model.zero_grad(set_to_none=True)\n"
    "    trained(torch.tensor(rows)).pow(2).sum().backward()\n"
    "    average_sparse_grads(model, 2)\n"
    "    table = model[0].weight.grad\n"
    "    assert table.is_sparse and table.is_coalesced()\n"
    "    grads.append({'table': table.to_dense(), 'linear': model[1].weight.grad.clone()})\n"
    "torch.save({'weights': model.state_dict(), 'grads': grads}, f'{folder}/rank{rank}.pt')\n"
)


def test_the_ranks_average_the_id_tables_sparse_gradients_as_ddp_averages_the_rest(tmp_path: Path) -> None:
    """Two real gloo processes: the ID table (left out of DDP) starts from rank 0's weights and its
    sparse gradients come out as the mean of both ranks', like the dense layer's, also when one
    rank's batch held only padding (gloo's own sparse all-reduce fails on that one)."""
    steps = {0: [[1, 2, 2, 7], [3, 0], [5]], 1: [[2, 9], [0, 0], [5, 6, 6, 6]]}
    ranks = [
        subprocess.Popen([sys.executable, "-c", SPARSE_RANK, str(tmp_path), str(rank), repr(steps[rank])])
        for rank in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in ranks] == [0, 0]
    saved = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(30, 4, padding_idx=0, sparse=True), torch.nn.Linear(4, 1))
    assert all(torch.equal(s["weights"][k], v) for s in saved for k, v in model.state_dict().items())
    for step, (first, second) in enumerate(zip(steps[0], steps[1], strict=True)):
        local = []
        for rows in (first, second):
            model.zero_grad(set_to_none=True)
            model(torch.tensor(rows)).pow(2).sum().backward()
            local.append((model[0].weight.grad.to_dense(), model[1].weight.grad.clone()))
        table, linear = (local[0][0] + local[1][0]) / 2, (local[0][1] + local[1][1]) / 2
        for s in saved:
            assert torch.allclose(s["grads"][step]["table"], table, atol=1e-6)
            assert torch.allclose(s["grads"][step]["linear"], linear, atol=1e-6)
    assert saved[0]["grads"][1]["table"][3].abs().sum() > 0  # rank 1 sent no row, rank 0's row 3 stays
