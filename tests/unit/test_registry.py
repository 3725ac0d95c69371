from sparkrec.registry import decide_promotion


def test_first_model_is_promoted() -> None:
    assert decide_promotion("1", 0.1, None, None, 0.0).promoted


def test_worse_beyond_tolerance_is_rejected_within_is_promoted() -> None:
    assert not decide_promotion("2", 0.10, "1", 0.12, 0.01).promoted
    assert decide_promotion("2", 0.115, "1", 0.12, 0.01).promoted
    assert decide_promotion("2", 0.13, "1", 0.12, 0.0).promoted
    rejected = decide_promotion("2", 0.10, "1", 0.12, 0.0)
    assert (rejected.champion_version, rejected.reason) == ("1", "0.1000 < 0.1200 - 0.0")


class _Trap:
    """Unpickling this creates a file: what a planted ``python_model.pkl`` could do on the driver."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def test_the_served_model_loads_without_unpickling_anything(tmp_path, mlflow_db) -> None:
    import pickle

    import mlflow
    import torch

    from sparkrec.models.packaging import TwoTowerPyfunc, write_model_dir
    from sparkrec.models.specs import ModelSpec
    from sparkrec.models.two_tower import TwoTower
    from sparkrec.registry import load_model
    from sparkrec.tracking import configure_mlflow
    from tests.conftest import make_config

    config = make_config(tmp_path, mlflow_db)
    configure_mlflow(config)
    torch.manual_seed(0)
    text = torch.cat([torch.zeros(1, 5), torch.randn(4, 5)])
    torch.save(TwoTower(text, 4, 3).state_dict(), tmp_path / "weights.pt")
    vocab = ["a", "b", "c", "d"]
    folder = write_model_dir(tmp_path / "model", tmp_path / "weights.pt", vocab, text.numpy(), ModelSpec(4, 3, "t"))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TwoTowerPyfunc(),
            artifacts={"model_dir": str(folder)},
            registered_model_name=config.mlflow.registered_model,
        )
    mlflow.MlflowClient().set_registered_model_alias(
        config.mlflow.registered_model, "champion", info.registered_model_version
    )
    marker = tmp_path / "unpickled"
    planted = list((tmp_path / "mlartifacts").rglob("python_model.pkl"))
    assert planted
    for path in planted:
        path.write_bytes(pickle.dumps(_Trap(str(marker))))
    pickle.loads(planted[0].read_bytes())  # the trap works ...
    assert marker.exists()
    marker.unlink()

    loaded, version = load_model(config, "champion")  # ... and loading the served model never springs it
    assert version == str(info.registered_model_version) and loaded.item_ids == vocab
    assert not marker.exists()
