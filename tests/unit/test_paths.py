"""Where sparkrec reads and writes: landing files under the landing root only, experiments never in
the production lakehouse, landing roots the driver can list."""

from pathlib import Path

import pytest

from sparkrec.config import ConfigError, load_config
from sparkrec.errors import UserError
from sparkrec.experiment.spec import experiment_lakehouse
from sparkrec.landing import landing_days, landing_files


def test_landing_listing_skips_links_writer_folders_and_hidden_parts(tmp_path: Path) -> None:
    config = load_config(None, [f"landing.root={tmp_path / 'landing'}"])
    day = tmp_path / "landing" / "events" / "ds=2024-03-10"
    outside = tmp_path / "private.jsonl"
    outside.write_text('{"user_id": "secret"}\n')
    for name in (
        "part-0.jsonl",
        "nested/part-1.jsonl",
        "_temporary/0/part-2.jsonl",
        ".staging/part-3.jsonl",
        "_SUCCESS",
    ):
        (day / name).parent.mkdir(parents=True, exist_ok=True)
        (day / name).write_text("{}\n")
    (day / "linked.jsonl").symlink_to(outside)
    (day / "linked-folder").symlink_to(tmp_path, target_is_directory=True)
    assert [p.relative_to(day).as_posix() for p in landing_files(day)] == ["nested/part-1.jsonl", "part-0.jsonl"]
    linked_day = tmp_path / "landing" / "events" / "ds=2024-03-11"
    linked_day.symlink_to(day, target_is_directory=True)
    assert landing_days(config) == ["2024-03-10"]


@pytest.mark.parametrize("name", ["..", ".", "../../prod", "/abs/path", "a b", "name;DROP"])
def test_a_data_set_name_is_a_plain_name(tmp_path: Path, name: str) -> None:
    config = load_config(None, [f"experiment.root={tmp_path / 'x'}", f"lakehouse.root={tmp_path / 'lh'}"])
    with pytest.raises(UserError, match="must match"):
        experiment_lakehouse(config, name)
    assert experiment_lakehouse(config, "ml-latest_small.v2") == tmp_path / "x" / "ml-latest_small.v2" / "lakehouse"


@pytest.mark.parametrize("experiments", ["lh", "."])
def test_experiments_never_hold_the_production_lakehouse(tmp_path: Path, experiments: str) -> None:
    config = load_config(None, [f"experiment.root={tmp_path / experiments}", f"lakehouse.root={tmp_path / 'lh'}"])
    with pytest.raises(UserError, match="is or contains lakehouse.root"):
        experiment_lakehouse(config, "online-retail")


def test_an_object_store_landing_root_is_refused_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match="landing.root s3a://bucket/landing: .* not an object-store URI"):
        load_config(None, ["landing.root=s3a://bucket/landing"])
