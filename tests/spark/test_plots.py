"""The served-score histogram is counted in Spark, every row, and agrees with numpy's."""

import numpy as np

from sparkrec.plots import score_histogram


def test_the_score_histogram_counts_every_row_in_spark_as_numpy_would(spark) -> None:
    rng = np.random.default_rng(7)
    model, fallback = rng.normal(0.3, 0.1, 900), rng.uniform(0.0, 0.05, 100)
    rows = [(float(s), "two_tower") for s in model] + [(float(s), "fallback:popularity") for s in fallback]
    rows += [(float("nan"), "two_tower"), (None, None)]  # no score: not counted
    recs = spark.createDataFrame(rows, "score double, reason string")
    edges, counts = score_histogram(recs, bins=20)
    want_edges = np.histogram_bin_edges(np.concatenate([model, fallback]), bins=20)
    np.testing.assert_allclose(edges, want_edges)
    np.testing.assert_array_equal(counts[False], np.histogram(model, bins=want_edges)[0])
    np.testing.assert_array_equal(counts[True], np.histogram(fallback, bins=want_edges)[0])
    assert counts[False].sum() == 900 and counts[True].sum() == 100


def test_one_score_or_none_gives_a_histogram_without_failing(spark) -> None:
    edges, counts = score_histogram(spark.createDataFrame([(2.0, "x")] * 3, "score double, reason string"), bins=4)
    assert counts[False].tolist() == [0, 0, 3, 0] and edges[0] == 1.5 and edges[-1] == 2.5
    empty = spark.createDataFrame([], "score double, reason string")
    assert sum(c.sum() for c in score_histogram(empty, bins=4)[1].values()) == 0
