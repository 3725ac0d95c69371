"""sparkrec: a nightly, distributed batch recommender on Spark, Delta Lake, BERT, PyTorch and MLflow."""

__version__ = "0.1.0"
