"""Which errors a user sees as one line (exit 2) and which are bugs (exit 1, traceback)."""

from delta.exceptions import ConcurrentAppendException, MetadataChangedException
from mlflow.exceptions import MlflowException

from sparkrec.cli import user_error
from sparkrec.errors import UserError


def test_write_conflicts_mlflow_errors_and_user_errors_are_one_line_and_bugs_are_none() -> None:
    conflict = ConcurrentAppendException("Files were added to partition [ds=2024-03-10] by a concurrent update.")
    assert user_error(conflict) == (
        "a concurrent write changed the table first (ConcurrentAppendException); run again: "
        "Files were added to partition [ds=2024-03-10] by a concurrent update."
    )
    assert "MetadataChangedException" in (user_error(MetadataChangedException("schema changed")) or "")
    assert user_error(MlflowException("RESOURCE_DOES_NOT_EXIST: no run x\ndetails")) == (
        "MLflow: RESOURCE_DOES_NOT_EXIST: no run x"
    )
    assert user_error(UserError("a date\nthat is not one")) == "a date that is not one"
    for bug in (KeyError("x"), ValueError("shapes differ"), ZeroDivisionError()):
        assert user_error(bug) is None
