"""The ranking model: its features and loss, a block of training lists, the multi-task training
step, and serving it over candidates from two sources."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparkrec.config import load_config, with_values
from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.models.baselines import collaborative_weights, ease_weights, with_text_neighbours
from sparkrec.models.lists import training_lists
from sparkrec.models.packaging import load_model_dir, write_model_dir
from sparkrec.models.ranker import DCNRanker, list_features, listwise_loss, rank_scores
from sparkrec.models.scoring import TwoTowerScorer, UserBlock
from sparkrec.models.specs import ModelSpec, RankerSpec
from sparkrec.models.training import train_two_tower
from sparkrec.models.two_tower import TwoTower
from sparkrec.ranking import LearnedRanker, RankedScorer
from tests.helpers import converter, train_params


def test_list_features_are_standardised_within_the_list_and_zero_on_padding() -> None:
    retrieval = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[True, True, True, False]])
    f = list_features(retrieval, retrieval * 10 + 5, torch.zeros_like(retrieval), mask)
    assert f.shape == (1, 4, 3)
    assert torch.allclose(f[0, :3, 0], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-3)  # padding not in the mean
    assert torch.allclose(f[0, :3, 0], f[0, :3, 1], atol=1e-4)  # scale-free: 10x the score plus 5, same feature
    assert (f[0, 3] == 0).all() and (f[0, :, 2] == 0).all()


def test_listwise_loss_averages_over_positives_and_skips_lists_without_one() -> None:
    scores = torch.tensor([[2.0, 0.0, 0.0, 50.0], [1.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    log_p = torch.log_softmax(torch.tensor([2.0, 0.0, 0.0]), dim=0)
    expected = -(log_p[0] + log_p[1]) / 2
    assert torch.isclose(listwise_loss(scores, labels, mask), expected)


def test_a_block_of_lists_takes_candidates_outside_the_context_and_labels_what_came_next() -> None:
    # EASE stand-in: item i points to item i + 1 strongly, to everything else weakly
    weights = np.full((7, 7), 0.01, dtype=np.float32)
    for i in range(1, 6):
        weights[i, i + 1] = 1.0
    weights[4, 6] = 0.5
    np.fill_diagonal(weights, 0.0)
    contexts = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "history": [[2, 1], [4], [1]],  # the context as serving reads it, most recent first
            "history_types": [["purchase", "view"], ["view"], ["view"]],
            "user_features": [[1.0, 0.5], [0.7, 0.0], [0.7, 0.0]],
            "context": [[1, 2], [4], [1]],
            "labels": [[3], [6], [4]],  # c's label is not among its candidates (2, ...): no list
        }
    )
    popularity = np.arange(7, dtype=np.float32) / 10
    recent = np.arange(7, dtype=np.float32)[::-1].copy()
    encoding = UserEncoding(3, ("purchase", "view"), USER_FEATURES)
    lists = training_lists(contexts.iloc[:2], weights, popularity, recent, encoding, candidates=3)
    assert len(lists) == 2 and list(lists.columns) == [
        "history", "history_types", "user_features", "candidates", "collaborative", "popularity",
        "recent_popularity", "labels",
    ]  # fmt: skip
    a, b = lists.iloc[0], lists.iloc[1]
    assert a["history"].tolist() == [2, 1, 0] and a["history_types"].tolist() == [1, 2, 0]
    assert np.allclose(a["user_features"], [1.0, 0.5])
    assert a["candidates"][0] == 3 and not {1, 2} & set(a["candidates"].tolist())
    assert a["labels"].tolist() == [1.0, 0.0, 0.0] and a["collaborative"][0] == pytest.approx(1.01)  # w[1, 3] + w[2, 3]
    assert np.allclose(a["popularity"], popularity[a["candidates"]])
    assert np.allclose(a["recent_popularity"], recent[a["candidates"]])
    assert b["candidates"][0] == 5 and b["labels"][b["candidates"].tolist().index(6)] == 1.0
    assert len(training_lists(contexts.iloc[2:], weights, popularity, recent, encoding, candidates=2)) == 0
    plain = training_lists(contexts.iloc[:2], weights, popularity, recent, UserEncoding(3), candidates=3)
    assert "user_features" not in plain.columns and plain.iloc[0]["history_types"].tolist() == [0, 0, 0]


@pytest.mark.parametrize("signal", ["collaborative", "recent"])
def test_the_ranker_learns_what_the_collaborative_order_gets_wrong(tmp_path: Path, signal: str) -> None:
    """Planted: the label is always the candidate with the LOWEST collaborative score among 8, so
    the collaborative order alone puts it last; or (``recent``) the one with the most recent
    popularity, which only a ranker that reads that feature sees. The multi-task step must teach
    the ranker to lift it."""
    vocab, width, length = 40, 8, 3
    rng = np.random.default_rng(5)

    def lists(n: int) -> pd.DataFrame:
        rows = []
        for _ in range(n):
            cand = rng.choice(vocab, width, replace=False) + 1
            collab, recent = rng.random(width).astype(np.float32), rng.random(width).astype(np.float32)
            labels = ((collab == collab.min()) if signal == "collaborative" else (recent == recent.max())).astype(
                np.float32
            )
            rows.append(
                (
                    [int(x) for x in rng.choice(vocab, length) + 1],
                    [int(x) for x in cand],
                    collab.tolist(),
                    rng.random(width).astype(np.float32).tolist(),
                    recent.tolist(),
                    labels.tolist(),
                )
            )
        return pd.DataFrame(
            rows, columns=["history", "candidates", "collaborative", "popularity", "recent_popularity", "labels"]
        )

    examples = pd.DataFrame(
        {"target": np.arange(256) % vocab + 1, "history": [[int((i + 1) % vocab + 1), 0, 0] for i in range(256)]}
    )
    np.save(tmp_path / "text.npy", np.vstack([np.zeros((1, 4)), rng.standard_normal((vocab, 4))]).astype(np.float32))
    np.save(tmp_path / "log_q.npy", np.full(vocab + 1, np.log(1 / vocab), dtype=np.float32))
    data = {
        "examples": converter(examples, tmp_path / "examples"),
        "item_text": str(tmp_path / "text.npy"),
        "log_q": str(tmp_path / "log_q.npy"),
        "lists": converter(lists(256), tmp_path / "lists"),
    }
    ranker = {
        "weight": 1.0,
        "batch_size": 16,
        "hidden": 16,
        "cross_layers": 2,
        "recent_days": 7 if signal == "recent" else 0,
    }
    params = train_params(dim=8, history_length=length, dropout=0.0, epochs=6, batch_size=32, seed=3, ranker=ranker)
    result = train_two_tower(data, str(tmp_path / "out"), params)
    assert len(result["rank_loss"]) == 6 and result["rank_loss"][-1] < result["rank_loss"][0]
    model = TwoTower(
        torch.from_numpy(np.load(tmp_path / "text.npy")),
        8,
        length,
        ranker={"hidden": 16, "cross_layers": 2, "recent": signal == "recent"},
    ).eval()
    model.load_state_dict(torch.load(tmp_path / "out" / "weights.pt"))
    test = lists(200)
    batch = {c: torch.tensor(np.stack(test[c].to_numpy())) for c in test.columns}
    with torch.no_grad():
        _, _, scores = model(batch["history"], batch["history"][:, 0], batch)
    top1 = float((batch["labels"].gather(1, scores.argmax(1, keepdim=True)) == 1).float().mean())
    assert top1 > 0.8, top1  # the collaborative order puts the label first never; chance is 1/8


def towers(n: int, dim: int = 4) -> TwoTowerScorer:
    rng = np.random.default_rng(1)
    model = TwoTower(torch.zeros(n + 1, 3), dim, 3)
    state = {k: v.detach().numpy() for k, v in model.users.state_dict().items()}
    return TwoTowerScorer(rng.standard_normal((n, dim)).astype(np.float32), state, dim, UserEncoding(3))


def test_learned_ranker_proposes_from_both_sources_and_never_a_seen_or_barred_item() -> None:
    n = 12
    weights = np.zeros((n, n), dtype=np.float32)
    weights[0, 1:4] = [3.0, 2.0, 1.0]  # the collaborative model only knows items 1, 2, 3 (after item 0)
    module = DCNRanker(hidden=8, cross_layers=1)
    popularity = np.where(np.arange(n) < 7, 1.0, 0.0).astype(np.float32)  # items 7.. have no interactions yet
    ranker = LearnedRanker(
        towers(n),
        weights,
        popularity,
        {k: v.detach().numpy() for k, v in module.state_dict().items()},
        RankerSpec(hidden=8, cross_layers=1, ease_lambda=1.0, candidates=3),
        retrieval_candidates=4,
    )
    allowed = np.ones(n, dtype=bool)
    allowed[2] = False
    block = UserBlock(["u"], [np.array([0])], [np.array([0, 5])])
    candidates, collaborative, usable = ranker.propose(block, allowed, 3)
    row = candidates[0, : usable[0]]
    assert usable[0] == 7 and len(set(row)) == 7  # 3 collaborative + 4 from the towers, no duplicates
    assert row[0] == 1 and not {0, 2, 5} & set(row.tolist())
    assert collaborative[0, 0] == 3.0
    only_collaborative = dataclasses.replace(ranker, retrieval_candidates=0).propose(block, allowed, 3)
    assert only_collaborative[0][0].tolist() == [1, 3, 4] and only_collaborative[2][0] == 3  # ties: lower row
    scores = RankedScorer(ranker, allowed).scores(block)
    assert np.isfinite(scores[0]).sum() == 7 and set(np.flatnonzero(np.isfinite(scores[0]))) == set(row.tolist())
    # a ranker trained with recent popularity reads the catalogue's recent counts when serving
    module = DCNRanker(hidden=8, cross_layers=1, recent=True)
    lately = np.arange(n, dtype=np.float32)
    recent = dataclasses.replace(
        ranker,
        ranker_state={k: v.detach().numpy() for k, v in module.state_dict().items()},
        spec=dataclasses.replace(ranker.spec, recent_days=7),
        recent=lately,
    )
    rising, falling = (
        dataclasses.replace(recent, recent=r).rescore(block, candidates, collaborative)
        for r in (lately, lately[::-1].copy())
    )
    assert np.isfinite(rising[0]).sum() == 7 and not np.allclose(
        rising[np.isfinite(rising)], falling[np.isfinite(falling)]
    )

    # EASE has no score for items without interactions: where it knows too few, the towers fill the list
    few = dataclasses.replace(
        ranker,
        popularity=np.where(np.isin(np.arange(n), [0, 1, 3]), 1.0, 0.0).astype(np.float32),
        retrieval_candidates=0,
    )
    candidates, collaborative, usable = few.propose(block, allowed, 3)
    assert usable[0] == 3 and candidates[0, :2].tolist() == [1, 3] and candidates[0, 2] not in {0, 1, 2, 3, 5}
    assert collaborative[0].tolist()[:2] == [3.0, 1.0] and np.isfinite(collaborative[0]).all()
    cold = dataclasses.replace(few, popularity=np.zeros(n, dtype=np.float32))  # only new items: all from the towers
    candidates, collaborative, usable = cold.propose(block, allowed, 3)
    dot = (cold.towers.user_vectors(block) @ cold.towers.item_vectors.T)[0]
    expected = [i for i in np.argsort(-dot, kind="stable") if i not in (0, 2, 5)][:3]
    assert usable[0] == 3 and candidates[0].tolist() == expected
    # no signal but the towers' tells these apart: the list keeps the towers' score, whatever the ranker
    assert np.allclose(cold.rescore(block, candidates, collaborative)[0], dot[candidates[0]], atol=1e-5)
    assert not np.allclose(ranker.rescore(block, candidates, collaborative + 1.0)[0], dot[candidates[0]], atol=1e-5)


def test_rank_scores_depend_on_each_signal() -> None:
    torch.manual_seed(0)
    ranker = DCNRanker(hidden=8, cross_layers=2)
    users, items = torch.randn(2, 4), torch.randn(2, 5, 4)
    collab, pop, mask = torch.randn(2, 5), torch.randn(2, 5), torch.ones(2, 5, dtype=torch.bool)
    base = rank_scores(ranker, users, items, collab, pop, mask)
    assert base.shape == (2, 5)
    for changed in (
        rank_scores(ranker, users, items, collab**3, pop, mask),
        rank_scores(ranker, users, items, collab, -pop, mask),
        rank_scores(ranker, users, items * torch.randn(2, 5, 1), collab, pop, mask),
    ):
        assert not torch.allclose(base, changed)
    assert torch.equal(base, rank_scores(ranker, users, items, collab, pop, mask, torch.randn(2, 5)))  # not read
    recent = DCNRanker(hidden=8, cross_layers=2, recent=True)
    lately = torch.randn(2, 5)
    assert not torch.allclose(
        rank_scores(recent, users, items, collab, pop, mask, lately),
        rank_scores(recent, users, items, collab, pop, mask, -lately),
    )
    with pytest.raises(ValueError, match="recent popularity"):
        rank_scores(recent, users, items, collab, pop, mask)


def test_without_the_mlp_the_ranker_is_the_cross_network_and_without_cross_layers_linear() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 5, 3)
    linear = DCNRanker(hidden=0, cross_layers=0)
    expected = features @ linear.out.weight.squeeze(0) + linear.out.bias
    assert torch.allclose(linear(features), expected)
    assert sum(p.numel() for p in linear.parameters()) == 4
    cross = DCNRanker(hidden=0, cross_layers=2)
    assert sum(p.numel() for p in cross.parameters()) == 4 + 2 * (9 + 3) and cross(features).shape == (2, 5)
    defaults = load_config().train
    assert RankerSpec.from_config(defaults).network() == {
        "hidden": defaults.ranker.hidden,
        "cross_layers": defaults.ranker.cross_layers,
        "recent": defaults.ranker.recent_days > 0,
    }
    with pytest.raises(ValueError, match="hidden and cross_layers"):
        DCNRanker(hidden=-1)


@pytest.mark.parametrize(
    "shape",
    [
        {"hidden": 8, "cross_layers": 1, "recent": False},
        {"hidden": 0, "cross_layers": 0, "recent": False},
        {"hidden": 0, "cross_layers": 2, "recent": True},
    ],
)
def test_a_saved_model_brings_its_ranker_back(tmp_path: Path, shape: dict[str, int]) -> None:
    """A model saved before the recent-popularity feature (no ``recent_days`` in its meta) loads as the
    three-feature ranker it is."""
    torch.manual_seed(2)
    text = torch.randn(6, 3)
    text[0] = 0
    model = TwoTower(text, 4, 3, ranker=shape)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    saved = {"hidden": shape["hidden"], "cross_layers": shape["cross_layers"], "ease_lambda": 50.0, "candidates": 10}
    spec = ModelSpec(
        dim=4,
        history_length=3,
        text_model="t",
        ranker=RankerSpec.from_dict({**saved, **({"recent_days": 7} if shape["recent"] else {})}),
    )
    loaded = load_model_dir(write_model_dir(tmp_path / "m", tmp_path / "weights.pt", list("abcde"), text.numpy(), spec))
    assert loaded.model.ranker is not None and loaded.spec.ranker is not None
    assert loaded.spec.ranker.ease_lambda == 50.0 and loaded.spec.ranker.recent == shape["recent"]
    assert loaded.model.ranker.recent == shape["recent"]
    for name, value in model.ranker.state_dict().items():
        assert torch.equal(loaded.model.ranker.state_dict()[name], value)


def test_the_collaborative_score_takes_text_as_the_model_was_trained() -> None:
    config = load_config()
    x = np.array([[1, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=np.float64)
    gram, text = x.T @ x, np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 1]], dtype=np.float32)
    spec = RankerSpec.from_config(config.train)
    assert (spec.text_weight, spec.text_neighbours) == (
        config.train.ranker.text_weight,
        config.train.ranker.text_neighbours,
    )
    np.testing.assert_allclose(
        collaborative_weights(gram, text, spec),
        ease_weights(with_text_neighbours(gram, text, spec.text_neighbours, spec.text_weight), spec.ease_lambda),
    )
    # The "without text" ablation and models saved before text neighbours: plain EASE.
    plain = ease_weights(gram, spec.ease_lambda)
    no_text = RankerSpec.from_config(with_values(config, {"train": {"model": {"text": False}}}).train)
    assert no_text.text_weight == 0
    np.testing.assert_array_equal(collaborative_weights(gram, text, no_text), plain)
    older = RankerSpec.from_dict({k: v for k, v in spec.to_dict().items() if not k.startswith("text_")})
    np.testing.assert_array_equal(collaborative_weights(gram, text, older), plain)
    assert not np.allclose(collaborative_weights(gram, text, spec), plain)
    # In place (the nightly's own gram): the same weights, with the gram used up as the working matrix.
    for tried in (spec, no_text):
        mine = gram.copy()
        np.testing.assert_array_equal(collaborative_weights(mine, text, tried, overwrite=True),
                                      collaborative_weights(gram, text, tried))  # fmt: skip
        assert not np.array_equal(mine, gram)
