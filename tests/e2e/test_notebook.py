"""The notebooks run headless, start to end: the quickstart builds the tables on a small cut of the
sample, then the exploration and model-report notebooks read them."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# A backfill and three kernels: minutes. make test-all runs them.
pytestmark = pytest.mark.slow


def execute(name: str, env: dict[str, str], cwd: Path) -> dict[int, list[dict]]:
    """Run a notebook in a fresh kernel with ``env`` set; the outputs of each code cell, by index."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    errors = [o for cell in outputs.values() for o in cell if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    return outputs


def text(outputs: list[dict]) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)


def images(outputs: dict[int, list[dict]]) -> int:
    return sum("image/png" in o.get("data", {}) for cell in outputs.values() for o in cell)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, dict[int, list[dict]]]:
    root = tmp_path_factory.mktemp("notebooks")
    overrides = [
        f"lakehouse.root={root / 'lakehouse'}",
        f"landing.root={root / 'landing'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_location={root / 'mlartifacts'}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        "spark.show_progress=false",
        "spark.driver_memory=1g",
        "train.epochs=1",
        "train.num_processes=1",
        "evaluate.holdout_days=1",
    ]
    env = {"SPARKREC_SET": ";".join(overrides), "SPARKREC_FROM": "2010-12-01", "SPARKREC_TO": "2010-12-03"}
    return env, root, execute("01_quickstart.ipynb", env, root)


def test_quickstart_notebook_runs(workspace) -> None:
    _, _, outputs = workspace
    recs_html = text(outputs[6])
    assert "user_id" in recs_html and "title" in recs_html
    metrics_text = text(outputs[7])
    assert "ndcg@10" in metrics_text and "popularity" in metrics_text


def test_explore_recommendations_notebook_runs(workspace) -> None:
    env, root, _ = workspace
    outputs = execute("02_explore_recommendations.ipynb", env, root)
    assert "day 2010-12-03, user " in text(outputs[4])
    assert "event_type" in text(outputs[6]) and "because_of" in text(outputs[7]) and "history=" in text(outputs[7])
    assert "two_tower" in text(outputs[9])
    assert images(outputs) >= 1
    assert "rows at version" in text(outputs[14])


def test_model_report_notebook_runs(workspace) -> None:
    env, root, _ = workspace
    outputs = execute("03_model_report.ipynb", env, root)
    assert "ndcg@10" in text(outputs[4]) and "popularity" in text(outputs[4])
    assert "champion" in text(outputs[9])
    assert images(outputs) >= 2
