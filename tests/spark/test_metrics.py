import math

import numpy as np
import pytest

from sparkrec.metrics import intra_list_diversity, novelty, ranking_metrics

L2, L3 = math.log2(3), math.log2(4)  # log2(rank + 1) for ranks 2 and 3


@pytest.fixture(scope="module")
def recs(spark):
    return spark.createDataFrame(
        [
            ("a", 1, "x"),
            ("a", 2, "y"),
            ("a", 3, "z"),
            ("a", 4, "m"),  # rank 4 is beyond k = 3
            ("b", 1, "x"),
            ("b", 2, "q"),
            ("b", 3, "w"),
            ("c", 1, "x"),  # c is not in the test set: ignored by the per-user metrics
            ("e", 1, "x"),
            ("e", 2, "y"),
            ("e", 3, "v"),
        ],
        "user_id string, rank int, item_id string",
    )


@pytest.fixture(scope="module")
def truth(spark):
    # a: 4 relevant, hits at ranks 2 and 3; b: 1 relevant, hit at rank 2; e: no hit; d: no recommendations
    return spark.createDataFrame(
        [("a", "y"), ("a", "z"), ("a", "m"), ("a", "n"), ("b", "q"), ("b", "q"), ("d", "x"), ("e", "p")],
        "user_id string, item_id string",
    )


def test_accuracy_metrics_match_hand_computed_values(recs, truth) -> None:
    got = ranking_metrics(recs, truth, k=3, catalog_size=10)
    ap_a, ap_b = 1 / 2 + 2 / 3, 1 / 2  # sum over hits of hits-so-far / rank
    assert got["users"] == 3
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert got["recall@3"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    ndcg_a = (1 / L2 + 1 / L3) / (1 + 1 / L2 + 1 / L3)
    ndcg_b = (1 / L2) / 1
    assert got["ndcg@3"] == pytest.approx((ndcg_a + ndcg_b + 0) / 3)
    # the two MAP variants differ only in the divisor: |R_u| against min(k, |R_u|)
    assert got["map"] == pytest.approx((ap_a / 4 + ap_b / 1 + 0) / 3)
    assert got["map@3"] == pytest.approx((ap_a / 3 + ap_b / 1 + 0) / 3)
    assert got["mrr@3"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert got["hit@3"] == pytest.approx(2 / 3)
    assert got["coverage@3"] == pytest.approx(6 / 10)  # x y z q w v


def test_ranks_beyond_k_do_not_count(spark) -> None:
    recs = spark.createDataFrame([("a", 1, "x"), ("a", 2, "y")], "user_id string, rank int, item_id string")
    truth = spark.createDataFrame([("a", "y")], "user_id string, item_id string")
    assert ranking_metrics(recs, truth, k=1)["recall@1"] == 0.0
    assert ranking_metrics(recs, truth, k=2)["ndcg@2"] == pytest.approx(1 / L2)


def test_intra_list_diversity_is_mean_pairwise_cosine_distance(spark) -> None:
    recs = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "y"), ("a", 3, "z"), ("b", 1, "x"), ("b", 2, "x2")],
        "user_id string, rank int, item_id string",
    )
    vectors = spark.createDataFrame(
        [("x", [1.0, 0.0]), ("y", [0.0, 1.0]), ("z", [1.0, 1.0]), ("x2", [2.0, 0.0])],
        "item_id string, embedding array<float>",
    )
    a = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert intra_list_diversity(recs, vectors) == pytest.approx((a + 0.0) / 2, abs=1e-6)
    # An item without text (zero vector) has no direction: its pairs are left out, not an error.
    blank = spark.createDataFrame(
        [("c", 1, "x"), ("c", 2, "w"), ("c", 3, "y")], "user_id string, rank int, item_id string"
    )
    zero = vectors.unionByName(spark.createDataFrame([("w", [0.0, 0.0])], "item_id string, embedding array<float>"))
    assert intra_list_diversity(blank, zero) == pytest.approx(1.0, abs=1e-6)


def test_intra_list_diversity_sums_users_whose_rows_span_arrow_batches(spark) -> None:
    rng = np.random.default_rng(5)
    items = {f"i{j}": rng.standard_normal(4).round(3).tolist() for j in range(30)}
    items["blank"] = [0.0] * 4
    lists = {f"u{u}": rng.choice(list(items), size=int(rng.integers(1, 9)), replace=False).tolist() for u in range(40)}
    recs = spark.createDataFrame(
        [(u, r + 1, i) for u, listed in lists.items() for r, i in enumerate(listed)],
        "user_id string, rank int, item_id string",
    )
    vectors = spark.createDataFrame(list(items.items()), "item_id string, embedding array<float>")
    expected = []
    for listed in lists.values():
        unit = [np.array(items[i]) / np.linalg.norm(items[i]) for i in listed if any(items[i])]
        pairs = [1 - unit[a] @ unit[b] for a in range(len(unit)) for b in range(a + 1, len(unit))]
        if pairs:
            expected.append(np.mean(pairs))
    batch = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")  # most lists cross a batch
    try:
        got = intra_list_diversity(recs, vectors)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", batch)
    assert got == pytest.approx(float(np.mean(expected)), abs=1e-5)
    mixed = vectors.unionByName(spark.createDataFrame([("odd", [1.0, 2.0])], "item_id string, embedding array<float>"))
    with pytest.raises(ValueError, match="differ in size"):
        intra_list_diversity(recs, mixed)


def test_novelty_is_mean_self_information(spark) -> None:
    train = spark.createDataFrame(
        [("u1", "x"), ("u2", "x"), ("u3", "x"), ("u4", "x"), ("u4", "y")], "user_id string, item_id string"
    )
    recs = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "y"), ("b", 1, "z")], "user_id string, rank int, item_id string"
    )
    # a: (-log2 1 + -log2 1/4) / 2 = 1; b: z unseen in training, p = 1 / (4 + 1)
    assert novelty(recs, train) == pytest.approx((1 + math.log2(5)) / 2)


def test_the_curve_agrees_with_the_metrics_at_every_k(recs, truth) -> None:
    from sparkrec.metrics import metric_curve

    curve = metric_curve(recs, truth, max_k=4).set_index("k")
    assert list(curve.index) == [1, 2, 3, 4]
    for k in (1, 2, 3, 4):
        spark_values = ranking_metrics(recs, truth, k=k)
        for name in ("precision", "recall", "ndcg", "hit"):
            assert curve.loc[k, name] == pytest.approx(spark_values[f"{name}@{k}"]), (name, k)


def test_evaluation_scores_a_seeded_sample_of_about_max_users(spark) -> None:
    from sparkrec.evaluation import sample_users

    truth = spark.range(4000).selectExpr("concat('u', id % 2000) AS user_id", "concat('i', id) AS item_id")
    sampled = sample_users(truth, 200, seed=42)
    users = {r["user_id"] for r in sampled.select("user_id").distinct().collect()}
    assert 140 <= len(users) <= 260  # about 200 of the 2,000
    assert sampled.count() == 2 * len(users)  # a sampled user keeps every relevant item
    assert users == {r["user_id"] for r in sample_users(truth, 200, seed=42).select("user_id").collect()}
    assert users != {r["user_id"] for r in sample_users(truth, 200, seed=7).select("user_id").collect()}
    assert sample_users(truth, 0, seed=42).count() == sample_users(truth, 2000, seed=42).count() == 4000
