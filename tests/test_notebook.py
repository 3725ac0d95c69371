"""The quickstart notebook runs headless, start to end, on a small cut of the sample."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch, mlflow_db: Path) -> None:
    overrides = [
        f"lakehouse.root={tmp_path / 'lakehouse'}", f"landing.root={tmp_path / 'landing'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"mlflow.artifact_location={tmp_path / 'mlartifacts'}",
        "spark.master=local[2]", "spark.shuffle_partitions=2", "spark.show_progress=false", "spark.driver_memory=1g",
        "train.epochs=1", "train.num_processes=1", "evaluate.holdout_days=1",
    ]
    monkeypatch.setenv("SPARKREC_SET", ";".join(overrides))
    monkeypatch.setenv("SPARKREC_FROM", "2010-12-01")
    monkeypatch.setenv("SPARKREC_TO", "2010-12-03")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    assert not [o for cell in outputs.values() for o in cell if o.get("output_type") == "error"]
    recs_html = "".join(o.get("data", {}).get("text/plain", "") for o in outputs[6])
    assert "user_id" in recs_html and "title" in recs_html
    metrics_text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs[7])
    assert "ndcg@10" in metrics_text and "popularity" in metrics_text
