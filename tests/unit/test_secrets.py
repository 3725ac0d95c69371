import logging
from pathlib import Path

import pytest

from sparkrec.config import load_config
from sparkrec.config.secrets import MASK, SecretFilter, is_secret_name, redact_text, redacted


def test_credential_keys_and_uri_passwords_are_masked_and_nothing_else() -> None:
    node = {
        "spark": {
            "conf": {
                "spark.hadoop.fs.s3a.secret.key": "wJalrXUtnFEMI/K7MDENG",
                "spark.hadoop.fs.s3a.access.key": "AKIAIOSFODNN7EXAMPLE",
                "spark.sql.shuffle.partitions": "4",
            }
        },
        "mlflow": {"tracking_uri": "https://bob:hunter22@mlflow.example.com/api", "experiment": "sparkrec"},
        "catalog": {"url": "jdbc:postgresql://db:5432/meta?user=hive&password=pg-pass-1"},
        "ids": ["databricks://profile", "s3a://bucket/key=2024/part-0"],
    }
    safe = redacted(node)
    conf = safe["spark"]["conf"]
    assert conf["spark.hadoop.fs.s3a.secret.key"] == MASK and conf["spark.hadoop.fs.s3a.access.key"] == MASK
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert safe["mlflow"] == {"tracking_uri": f"https://bob:{MASK}@mlflow.example.com/api", "experiment": "sparkrec"}
    assert safe["catalog"]["url"] == f"jdbc:postgresql://db:5432/meta?user=hive&password={MASK}"
    assert safe["ids"] == node["ids"]
    assert "hunter22" not in str(safe) and "pg-pass-1" not in str(safe)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DATABRICKS_TOKEN", True),
        ("db.password", True),
        ("spark.hadoop.fs.azure.account.key", True),
        ("api-key", True),
        ("train.model.attributes", False),
        ("embed.max_length", False),
        ("recommend.exclude_file", False),
        ("monkey", False),
        ("tokens_per_batch", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_the_default_config_has_nothing_to_mask() -> None:
    raw = load_config(None).to_dict()
    assert redacted(raw) == raw


def test_a_secret_read_from_the_environment_is_masked_wherever_it_turns_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKREC_TEST_DB_PASSWORD", "pa55-from-env")
    # Under a key that does not look like a credential: known as a secret by the variable's name.
    load_config(None, ["mlflow.experiment=runs-${SPARKREC_TEST_DB_PASSWORD}"])
    assert redact_text("could not reach runs-pa55-from-env") == f"could not reach runs-{MASK}"
    record = logging.LogRecord("sparkrec", logging.INFO, __file__, 1, "login %s failed", ("pa55-from-env",), None)
    assert SecretFilter().filter(record)
    assert record.getMessage() == f"login {MASK} failed"
