"""The model contract: shapes, the cold-item path, and serving items and users the model never saw."""

from __future__ import annotations

import numpy as np
import torch

from sparkrec.encoding import UserEncoding
from sparkrec.models.packaging import load_model_dir, write_model_dir
from sparkrec.models.scoring import TwoTowerScorer, UserBlock
from sparkrec.models.specs import ModelSpec
from sparkrec.models.two_tower import TwoTower

V, T, D, L = 6, 5, 4, 3


def model(seed: int = 0) -> TwoTower:
    torch.manual_seed(seed)
    text = torch.cat([torch.zeros(1, T), torch.randn(V, T)])
    return TwoTower(text, D, L).eval()


def test_shapes() -> None:
    m = model()
    users, items, _ = m(torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor([4, 5]))
    assert users.shape == (2, D) and items.shape == (2, D)
    assert m.item_vectors(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, D)


def test_same_seed_same_model() -> None:
    a, b = model(3), model(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_cold_item_is_its_text_alone() -> None:
    m = model()
    text = torch.randn(2, T)
    cold = m.items(torch.tensor([0, 0]), text)  # id 0: not in the vocabulary
    assert torch.allclose(cold, m.items.text_projection(text), atol=1e-6)
    assert not torch.allclose(cold[0], cold[1])  # different texts, different vectors


def test_a_model_trained_days_ago_scores_new_items_and_new_users(tmp_path) -> None:
    m = model()
    weights = tmp_path / "weights.pt"
    torch.save(m.state_dict(), weights)
    vocab = [f"i{j}" for j in range(1, V + 1)]
    spec = ModelSpec(dim=D, history_length=L, text_model="t", settings={"temperature": 0.1, "dropout": 0.0})
    loaded = load_model_dir(write_model_dir(tmp_path / "model", weights, vocab, m.item_text.numpy(), spec))
    catalogue = [*vocab, "new_a", "new_b"]  # two items launched after training
    text = np.vstack([m.item_text.numpy()[1:], np.random.default_rng(0).standard_normal((2, T))]).astype(np.float32)
    vectors = loaded.item_vectors(catalogue, text)
    assert vectors.shape == (V + 2, D) and np.isfinite(vectors).all() and np.abs(vectors[V:]).sum() > 0
    state = {k: v.numpy() for k, v in loaded.model.users.state_dict().items()}
    scorer = TwoTowerScorer(vectors, state, D, UserEncoding(L))
    # a user whose whole history is new items, and a user with no usable history
    block = UserBlock(["u_new", "u_old"], [np.array([V, V + 1]), np.array([0, 2])], [np.array([V]), np.array([0])])
    scores = scorer.scores(block)
    assert scores.shape == (2, V + 2) and np.isfinite(scores).all()
    assert not np.allclose(scores[0], scores[1])


def test_item_vectors_in_blocks_are_the_vectors_of_one_pass(tmp_path, monkeypatch) -> None:
    from sparkrec.models import packaging

    m = model()
    weights = tmp_path / "weights.pt"
    torch.save(m.state_dict(), weights)
    vocab = [f"i{j}" for j in range(1, V + 1)]
    spec = ModelSpec(dim=D, history_length=L, text_model="t", settings={"temperature": 0.1, "dropout": 0.0})
    staged = tmp_path / "item_text.npy"  # the model folder copies a staged file as it is
    np.save(staged, m.item_text.numpy())
    loaded = load_model_dir(write_model_dir(tmp_path / "model", weights, vocab, staged, spec))
    catalogue = [*vocab, "new_a"]
    text = np.vstack([m.item_text.numpy()[1:], np.ones((1, T))]).astype(np.float32)
    with torch.inference_mode():
        whole = m.items(torch.tensor([*range(1, V + 1), 0]), torch.from_numpy(text)).numpy()
        vocabulary = m.item_vectors(torch.arange(1, V + 1))
    monkeypatch.setattr(packaging, "ITEM_BLOCK", 4)  # 7 catalogue items: blocks of 4 and 3
    assert np.allclose(loaded.item_vectors(catalogue, text), whole, atol=1e-6)
    assert loaded.text_file == tmp_path / "model" / "item_text.npy"  # the vocabulary's text read from it
    assert torch.allclose(loaded.vocabulary_vectors(), vocabulary, atol=1e-6)
    in_memory = packaging.LoadedTwoTower(m, vocab, spec)  # no file: the model's own buffer
    assert torch.allclose(in_memory.vocabulary_vectors(), vocabulary, atol=1e-6)


def test_a_loaded_model_is_its_file_s_weights_and_writes_to_them_stay_in_the_process(tmp_path) -> None:
    m = model()
    weights = tmp_path / "weights.pt"
    torch.save(m.state_dict(), weights)
    spec = ModelSpec(dim=D, history_length=L, text_model="t", settings={"temperature": 0.1, "dropout": 0.0})
    folder = write_model_dir(tmp_path / "model", weights, [f"i{j}" for j in range(1, V + 1)], m.item_text.numpy(), spec)
    loaded = load_model_dir(folder)
    saved = m.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())
    with torch.no_grad():  # the mapping is private: the folder keeps what training wrote
        next(loaded.model.parameters()).add_(1.0)
        loaded.model.item_text.zero_()
    again = load_model_dir(folder)
    assert all(torch.equal(v, saved[k]) for k, v in again.model.state_dict().items())


def test_attributes_are_coded_with_the_training_vocabulary_and_fused() -> None:
    from sparkrec.models.attributes import MAX_CATEGORIES, AttributeSpec, encode, fit_spec

    spec = fit_spec(["Action, Comedy", "Comedy", None, "Drama"] * 3, [1.0, 2.0, None, 40.0] * 3)
    assert spec.categories == ("Action", "Comedy", "Drama") and spec.price_edges
    assert AttributeSpec.from_dict(spec.to_dict()) == spec
    codes = encode(spec, ["Comedy, Action", "Western", None], [40.0, None, 1.0])
    assert codes.shape == (3, MAX_CATEGORIES + 1)
    assert codes[0, :2].tolist() == [2, 1] and codes[1].tolist() == [0] * (MAX_CATEGORIES + 1)  # unknown: none
    assert codes[0, -1] > codes[2, -1] > 0  # a dearer item gets a higher price bucket

    torch.manual_seed(0)
    attrs = torch.from_numpy(
        np.vstack(
            [
                np.zeros((1, codes.shape[1]), dtype=np.int64),
                encode(spec, ["Action", "Comedy", None, "Drama", "Action", "Comedy"], [1.0, 2.0, None, 40.0, 1.0, 2.0]),
            ]
        )
    )
    m = TwoTower(torch.cat([torch.zeros(1, T), torch.randn(V, T)]), D, L, item_attrs=attrs, attr_codes=spec.size).eval()
    text = torch.randn(2, T)
    with_attrs = m.items(torch.tensor([0, 0]), text, torch.from_numpy(codes[[0, 1]]))
    assert not torch.allclose(with_attrs[0], m.items.text_projection(text[0]), atol=1e-4)  # attributes count
    assert torch.allclose(with_attrs[1], m.items.text_projection(text[1]), atol=1e-6)  # none known: text alone
    assert m.item_vectors(torch.tensor([[1, 2], [3, 0]])).shape == (2, 2, D)


def test_ablations_remove_what_they_name() -> None:
    torch.manual_seed(0)
    text = torch.cat([torch.zeros(1, T), torch.randn(V, T)])
    no_text = TwoTower(text, D, L, text=False).eval()
    ids = torch.tensor([1, 2, 3])
    assert no_text.items.text_projection is None
    assert torch.equal(no_text.items(ids, torch.randn(3, T)), no_text.items(ids, torch.randn(3, T)))  # text ignored
    mean = TwoTower(text, D, L, history_attention=False).eval()
    assert mean.users.query is None and mean.users.recency is None
    with torch.no_grad():
        history = torch.tensor([[1, 2, 0]])
        users, _, _ = mean(history, torch.tensor([4]))
        pooled = mean.item_vectors(torch.tensor([1, 2])).mean(0)
        assert torch.allclose(users[0], pooled + mean.users.output(pooled), atol=1e-5)


def test_sampled_negatives_join_the_softmax_with_their_own_correction() -> None:
    import math

    from sparkrec.models.two_tower import in_batch_softmax_loss

    torch.manual_seed(0)
    users, targets = torch.randn(3, 4), torch.tensor([1, 2, 3])
    items = torch.randn(5, 4)  # 3 targets, then 2 sampled: item 2 (row 1's own target) and item 9
    negatives, log_q = torch.tensor([2, 9]), torch.log(torch.tensor([0.5, 0.3, 0.2]))
    got = in_batch_softmax_loss(users, items, targets, 0.5, log_q, negatives, math.log(2 / 10))
    logits = users @ items.T / 0.5 - torch.cat([log_q + math.log(3), torch.full((2,), math.log(2 / 10))])
    logits[1, 3] = -1e4  # a sampled copy of the row's own target is no negative
    assert torch.isclose(got, torch.nn.functional.cross_entropy(logits, torch.arange(3)))
    # without sampled items: in-batch only, and the constant log(B) changes nothing
    plain = users @ items[:3].T / 0.5 - log_q
    assert torch.isclose(
        in_batch_softmax_loss(users, items[:3], targets, 0.5, log_q),
        torch.nn.functional.cross_entropy(plain, torch.arange(3)),
    )


def test_extra_vector_columns_are_fused_each_on_its_own_and_travel_with_the_model(tmp_path) -> None:
    torch.manual_seed(0)
    text = torch.cat([torch.zeros(1, T), torch.randn(V, T)])
    extra = torch.cat([torch.zeros(1, 5), torch.randn(V, 5)])  # a 3-d column, then a 2-d one
    extra[2, 3:] = 0.0  # item 2 has no vector in the second column
    m = TwoTower(text, D, L, item_extra=extra, extra_dims=(3, 2)).eval()
    assert [p.in_features for p in m.items.extra_projections] == [3, 2]
    cold_text = torch.randn(3, T)
    columns = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0], [0.0] * 5, [0.0, 0.0, 0.0, 1.0, -1.0]])
    with torch.no_grad():
        cold = m.items(torch.zeros(3, dtype=torch.long), cold_text, None, columns)
        assert torch.allclose(cold[1], m.items.text_projection(cold_text[1]), atol=1e-6)  # no vector: text alone
        for row in (0, 2):  # a vector in either column changes the item's vector
            assert not torch.allclose(cold[row], m.items.text_projection(cold_text[row]), atol=1e-4)
        changed = m.items(torch.tensor([1]), text[1:2], None, extra[1:2] * 2)
        assert not torch.allclose(changed, m.item_vectors(torch.tensor([1])), atol=1e-4)

    weights = tmp_path / "weights.pt"
    torch.save(m.state_dict(), weights)
    vocab = [f"i{j}" for j in range(1, V + 1)]
    spec = ModelSpec(
        dim=D, history_length=L, text_model="t", item_vectors={"image": "/a", "colour": "/b"}, extra_dims=(3, 2)
    )
    loaded = load_model_dir(
        write_model_dir(tmp_path / "model", weights, vocab, text.numpy(), spec, item_extra=extra.numpy())
    )
    assert loaded.spec.extra_columns == {"image": 3, "colour": 2}
    vectors = loaded.item_vectors(
        ["i1", "new"],
        np.vstack([text[1].numpy(), cold_text[0].numpy()]),
        None,
        np.vstack([extra[1].numpy(), columns[0].numpy()]),
    )
    assert np.allclose(vectors[0], m.item_vectors(torch.tensor([1])).detach().numpy()[0], atol=1e-5)
    assert np.allclose(vectors[1], cold[0].numpy(), atol=1e-5)


def test_the_pyfunc_reads_event_types_and_user_features_where_given(tmp_path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import pytest

    from sparkrec.models.packaging import TwoTowerPyfunc, signature

    torch.manual_seed(0)
    text = torch.cat([torch.zeros(1, T), torch.randn(V, T)])
    m = TwoTower(text, D, L, event_types=2, user_features=2).eval()
    with torch.no_grad():
        m.users.features.weight.normal_(0.0, 5.0)
        m.users.event_type.weight[1:].normal_(0.0, 3.0)
    weights = tmp_path / "weights.pt"
    torch.save(m.state_dict(), weights)
    vocab = [f"i{j}" for j in range(1, V + 1)]
    spec = ModelSpec(
        dim=D,
        history_length=L,
        text_model="t",
        event_types=("view", "purchase"),
        user_feature_names=("activity", "tenure_days"),
    )
    folder = write_model_dir(tmp_path / "model", weights, vocab, text.numpy(), spec)
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc", python_model=TwoTowerPyfunc(), artifacts={"model_dir": str(folder)}, signature=signature()
    )
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    history = ["i2", "i1"]
    everything = {"k": V, "exclude_history": False}
    plain = served.predict(pd.DataFrame({"history": [history]}), params=everything)
    full = served.predict(
        pd.DataFrame(
            {
                "history": [history, history],
                "history_types": [["purchase", "view"], None],
                "user_features": [[1.5, 0.5], None],
            }
        ),
        params=everything,
    )
    ids = torch.tensor([[2, 1, 0]])
    with torch.no_grad():
        user = m.users(m.item_vectors(ids), ids > 0, torch.tensor([[2, 1, 0]]), torch.tensor([[1.5, 0.5]]))
        expected = (user @ m.item_vectors(torch.arange(1, V + 1)).T)[0]
    assert np.allclose(full["scores"][0], np.sort(expected.numpy())[::-1], atol=1e-5)
    assert full["item_ids"][0] == [vocab[i] for i in np.argsort(-expected.numpy(), kind="stable")]
    assert np.allclose(full["scores"][1], plain["scores"][0], atol=1e-6)  # a row without them: the history alone
    assert not np.allclose(full["scores"][0], plain["scores"][0])
    # by default the history's own items are not recommended back, however many are asked for
    unseen = served.predict(pd.DataFrame({"history": [history + ["not-in-vocabulary"]]}), params={"k": V})
    assert unseen["item_ids"][0] == [i for i in plain["item_ids"][0] if i not in history]
    assert np.allclose(
        unseen["scores"][0],
        [s for i, s in zip(plain["item_ids"][0], plain["scores"][0], strict=True) if i not in history],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="user_features of row 0 has 3 values; the model reads 2"):
        served.predict(pd.DataFrame({"history": [history], "user_features": [[1.0, 2.0, 3.0]]}))
