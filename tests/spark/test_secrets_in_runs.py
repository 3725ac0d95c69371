import json
import logging
from pathlib import Path

import mlflow
import pytest

from sparkrec.cli import main
from sparkrec.config.secrets import MASK
from tests.conftest import make_config
from tests.helpers import write_landing

DAY = "2024-03-10"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
LINES = [
    '{"user_id":"u1","item_id":"i1","event_type":"view","ts":"2024-03-10 10:00:00"}',
    '{"user_id":"u2","item_id":"i2","event_type":"purchase","ts":"2024-03-10 11:00:00","value":1}',
]


def test_a_secret_from_the_environment_reaches_no_run_log_or_output(
    spark, tmp_path: Path, mlflow_db: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    monkeypatch.setenv("SPARKREC_TEST_AWS_SECRET_ACCESS_KEY", SECRET)
    sets = [
        "spark.master=local[2]",
        "spark.show_progress=false",
        f"lakehouse.root={tmp_path / 'lakehouse'}",
        f"landing.root={tmp_path / 'landing'}",
        f"mlflow.tracking_uri=sqlite:///{mlflow_db}",
        f"mlflow.artifact_location={tmp_path / 'mlartifacts'}",
        "mlflow.experiment=secrets-test",
        'spark.conf={"spark.hadoop.fs.s3a.secret.key": "${SPARKREC_TEST_AWS_SECRET_ACCESS_KEY}"}',
    ]
    config = make_config(tmp_path, mlflow_db, *sets)
    write_landing(config, DAY, LINES)
    args = [x for s in sets for x in ("--set", s)]
    caplog.set_level(logging.DEBUG)
    assert main(["clean", "--date", DAY, *args]) == 0
    assert main(["doctor", *args]) == 0
    # A failure whose message carries the secret: the one line printed masks it.
    assert main(["clean", "--date", "2024-03-11", *args, "--set", f"landing.root={tmp_path}/{SECRET}"]) == 2
    printed = capsys.readouterr()
    assert MASK in printed.err

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    experiment = client.get_experiment_by_name("secrets-test")
    runs = client.search_runs([experiment.experiment_id])
    assert runs, "the clean stage logged no run"
    seen = [printed.out, printed.err, caplog.text]
    for run in runs:
        seen += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        folder = Path(
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id))
        )
        seen += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    logged_conf = [s for s in seen if "spark.hadoop.fs.s3a.secret.key" in s]
    assert logged_conf and all(f'"spark.hadoop.fs.s3a.secret.key": "{MASK}"' in s for s in logged_conf)
    assert not [s for s in seen if SECRET in s]
