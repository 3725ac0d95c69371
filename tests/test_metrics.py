import math

import pytest

from sparkrec.metrics import ranking_metrics


def test_metrics_match_hand_computed_values(spark) -> None:
    recs = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "y"), ("a", 3, "z"), ("b", 1, "x"), ("b", 2, "q"), ("b", 3, "w"), ("c", 1, "x")],
        "user_id string, rank int, item_id string",
    )
    # a: hits at ranks 2 and 3, 4 relevant; b: no hit; c: not in the test set (ignored); d: no recs (ignored)
    truth = spark.createDataFrame(
        [("a", "y"), ("a", "z"), ("a", "m"), ("a", "n"), ("b", "y"), ("d", "x")], "user_id string, item_id string"
    )
    got = ranking_metrics(recs, truth, k=3)
    dcg_a = 1 / math.log2(3) + 1 / math.log2(4)
    idcg_a = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(k=3, 4 relevant) ideal hits
    assert got["users"] == 2
    assert got["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["recall@3"] == pytest.approx((2 / 4 + 0) / 2)
    assert got["ndcg@3"] == pytest.approx((dcg_a / idcg_a + 0) / 2)


def test_ranks_beyond_k_do_not_count(spark) -> None:
    recs = spark.createDataFrame([("a", 1, "x"), ("a", 2, "y")], "user_id string, rank int, item_id string")
    truth = spark.createDataFrame([("a", "y")], "user_id string, item_id string")
    assert ranking_metrics(recs, truth, k=1)["recall@1"] == 0.0
    assert ranking_metrics(recs, truth, k=2)["ndcg@2"] == pytest.approx(1 / math.log2(3))
