"""The driver's side of training: stage the inputs (``training_data``), launch the training processes
through TorchDistributor, log what they report to MLflow, and register the model with its
candidate alias. The train stage and ``sparkrec experiment`` train through ``fit_two_tower``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zipfile
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from pyspark import cloudpickle
from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import DataFrame, SparkSession

from sparkrec import training_data
from sparkrec.config import Config
from sparkrec.models import launch
from sparkrec.models.packaging import TwoTowerPyfunc, signature, write_model_dir
from sparkrec.models.specs import ModelSpec, TrainingParams
from sparkrec.models.training import TrainingFailedError, checkpoint_epoch, oom_kills, rank_errors, train_two_tower
from sparkrec.plots import log_loss_curve
from sparkrec.tracking import log_metrics, log_params

log = logging.getLogger("sparkrec")


def fit_two_tower(
    spark: SparkSession, config: Config, history_df: DataFrame, run_id: str, label: str
) -> dict[str, Any]:
    """Train on ``history_df`` (interactions) through TorchDistributor inside the active MLflow run;
    log the model, register it as ``mlflow.registered_model`` and point the candidate alias at it.

    Raises:
        TrainingFailedError: a training process failed (its checkpoint, if any, is kept for a re-run).
    """
    staging = config.shared_path("_staging", "train", run_id)
    staging.mkdir(parents=True, exist_ok=True)
    data = training_data.prepare(spark, config, history_df, staging, label)
    params = _params(spark, config, data, label, run_id)
    adopted = adopt_checkpoint(Path(params.checkpoint_dir))
    log_params(
        {
            **params.flat(),
            "examples": data.examples,
            "vocabulary": len(data.vocab),
            "trained_on": label,
            "text_model": data.text_model,
            "validation_examples": data.validation_examples,
            "ranking_lists": data.ranking_lists,
        }
    )
    log.info(
        "train on %s: %d examples, %d items, %d process(es)",
        label,
        data.examples,
        len(data.vocab),
        config.train.num_processes,
    )
    result = _launch(config, data, params, staging / "out")
    _log_result(config, result, params)
    version = _register(config, data, staging, label)
    shutil.rmtree(staging, ignore_errors=True)
    for done in (params.checkpoint_dir, adopted):
        if done is not None:
            shutil.rmtree(done, ignore_errors=True)
    final = {"final_loss": result["loss"][-1], "examples": float(data.examples), "vocabulary": float(len(data.vocab))}
    return {
        "model_version": version,
        "loss": result["loss"],
        "examples_per_s": result["examples_per_s"],
        "placement": result.get("placement", []),
        **final,
    }


def _params(
    spark: SparkSession, config: Config, data: training_data.TrainingData, label: str, run_id: str
) -> TrainingParams:
    """The training settings. Checkpoints go to a folder of this run's own, under one keyed by the data
    and settings (epochs aside): a run never deletes another's, and a re-run after a failure resumes
    from the failed run's checkpoint (``adopt_checkpoint``)."""
    threads = 0
    if not config.train.local_mode:  # a rank in an executor task gets that task's cores
        threads = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    params = TrainingParams(config.train, threads=threads)
    settings = {k: v for k, v in params.flat().items() if k != "epochs"}
    key = json.dumps([label, data.text_model, data.examples, data.vocab, settings], sort_keys=True, default=str)
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = config.shared_path("_checkpoints", "train", fingerprint, run_id)
    return TrainingParams(config.train, threads, str(folder))


def adopt_checkpoint(run_folder: Path) -> Path | None:
    """Copy the furthest checkpoint an earlier run of the same data and settings left (it failed) into
    this run's folder, so training resumes after its last epoch; returns the folder copied from."""
    parent = run_folder.parent
    earlier = [p for p in parent.iterdir() if p != run_folder and (p / "last.pt").is_file()] if parent.is_dir() else []
    if not earlier:
        return None
    furthest = max(earlier, key=lambda p: (checkpoint_epoch(str(p)), p.stat().st_mtime))
    shutil.copytree(furthest, run_folder, dirs_exist_ok=True)
    log.info("train: resuming from the checkpoint of an earlier run in %s", furthest)
    return furthest


def _launch(config: Config, data: training_data.TrainingData, params: TrainingParams, output: Path) -> dict[str, Any]:
    """Run ``train_two_tower`` in ``train.num_processes`` processes; what rank 0 returns.

    Raises:
        TrainingFailedError: naming what the failed processes wrote, and whether a re-run resumes.
    """
    distributor = TorchDistributor(
        num_processes=config.train.num_processes, local_mode=config.train.local_mode, use_gpu=config.train.use_gpu
    )
    cloudpickle.register_pickle_by_value(launch)  # ranks may start before sparkrec is importable
    target = f"{train_two_tower.__module__}:{train_two_tower.__name__}"
    kills_before = oom_kills()  # the ranks run on this machine in local mode
    try:
        result = distributor.run(launch.in_rank, target, data.inputs.to_dict(), str(output), params.to_dict())
    except Exception as err:  # a rank died or raised: TorchDistributor reports its whole output
        done = checkpoint_epoch(params.checkpoint_dir)
        kills = oom_kills() - kills_before if config.train.local_mode else 0
        reasons = rank_errors(str(output), config.train.num_processes, kills) or _python_error(str(err))
        why = "; ".join(reasons)[:600] if reasons else type(err).__name__
        then = (
            f"re-run the train stage to resume from the checkpoint in {params.checkpoint_dir}"
            if done
            else "no epoch finished, so a re-run starts over"
        )
        raise TrainingFailedError(f"training failed after {done} finished epoch(s) ({why}); {then}") from err
    if not isinstance(result, dict):
        raise TrainingFailedError(f"training returned no result from rank 0 (got {type(result).__name__})")
    return result


def _python_error(output: str) -> list[str]:
    """The last Python exception line of a failed job's output (``ModuleNotFoundError: ...``), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit): ", line)]
    return (errors or lines)[-1:]


def _log_result(config: Config, result: dict[str, Any], params: TrainingParams) -> None:
    """Where the processes ran, the per-epoch losses and speed, and the loss curve."""
    for rank, where in enumerate(result.get("placement", [])):
        log.info("train: rank %d ran as pid %s on %s in %s", rank, where["pid"], where["host"], where["cwd"])
    if result.get("resumed_from"):
        mlflow.log_param("resumed_from_epoch", result["resumed_from"])
        log.info("train: resumed after epoch %d from %s", result["resumed_from"], params.checkpoint_dir)
    processes = config.train.num_processes
    for epoch, (loss, speed) in enumerate(zip(result["loss"], result["examples_per_s"], strict=True), start=1):
        log_metrics(
            {"loss": loss, "examples_per_s": speed, "examples_per_s_per_process": speed / processes}, step=epoch
        )
    for epoch, val in enumerate(result.get("val_loss", []), start=1):
        log_metrics({"val_loss": val}, step=epoch)
    for epoch, val in enumerate(result.get("rank_loss", []), start=1):
        log_metrics({"rank_loss": val}, step=epoch)
    if result.get("best_epoch"):
        mlflow.log_param("best_epoch", int(result["best_epoch"][0]))
    log_loss_curve(result["loss"], result.get("val_loss"), result.get("rank_loss"))


def _register(config: Config, data: training_data.TrainingData, staging: Path, label: str) -> str:
    """Log the trained model as an MLflow pyfunc, register it and point the candidate alias at it."""
    spec = ModelSpec.from_config(
        config.train.model,
        text_model=data.text_model,
        trained_on=label,
        attributes=data.attributes.to_dict() if data.attributes is not None else None,
        extra_dims=data.inputs.extra_dims,
        event_types=data.inputs.event_types,
        user_feature_names=data.inputs.user_features,
        ranker=data.ranker,
    )
    weights, text = staging / "out" / "weights.pt", Path(data.inputs.item_text)  # files, copied as they are
    model_dir = write_model_dir(staging / "model", weights, data.vocab, text, spec, data.item_attrs, data.item_extra)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=TwoTowerPyfunc(),
        artifacts={"model_dir": str(model_dir)},
        input_example=pd.DataFrame({"history": [data.vocab[:3]]}),
        signature=signature(),
        code_paths=[_package_source(staging / "code")],
        pip_requirements=[f"{p}=={package_version(p)}" for p in ("torch", "numpy", "pandas", "mlflow")],
        registered_model_name=config.mlflow.registered_model,
    )
    version = str(info.registered_model_version)
    name, alias = config.mlflow.registered_model, config.mlflow.candidate_alias
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    log.info("train: registered %s version %s as @%s", name, version, alias)
    return version


def _package_source(scratch: Path) -> str:
    """The sparkrec package folder, for the logged model's code; extracted first when sparkrec was
    imported from a .zip or wheel (spark-submit --py-files)."""
    package = Path(__file__).resolve().parent
    if package.is_dir():
        return str(package)
    archive = next(p for p in package.parents if p.is_file())
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(scratch, [n for n in zf.namelist() if n.startswith("sparkrec/")])
    return str(scratch / "sparkrec")
