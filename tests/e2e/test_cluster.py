"""The jobs on a real Spark standalone cluster: a master and two one-core workers on 127.0.0.1
(tools/standalone_cluster.sh), jobs sent with spark-submit, training through TorchDistributor with
local_mode=False. `make cluster-test` runs them against the cluster it starts on port 7077; run alone
(`pytest -m cluster tests/e2e/test_cluster.py`), the module starts a cluster of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DAY, make_config
from tests.helpers import assert_lists_contract

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "standalone_cluster.sh"

DAY = SAMPLE_DAY
K = 10
# The same small settings for every run, local or cluster.
SETTINGS = [
    "evaluate.holdout_days=2",
    "evaluate.curve_k=10",
    "train.epochs=3",
    "train.batch_size=64",
    "train.model.dim=16",
    f"recommend.k={K}",
    "spark.show_progress=false",
]
# Local and cluster runs train the same seeded model on the same data in the same order (the
# partition counts are the same), so their metrics agree; this is the tolerance the test allows.
METRIC_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running cluster: the one `make cluster-test` started, or one of this module's own on spare ports."""
    if os.environ.get("SPARKREC_TEST_MASTER"):
        yield {"master": os.environ["SPARKREC_TEST_MASTER"], "env": _env(), "dir": os.environ["SPARKREC_CLUSTER_DIR"]}
        return
    folder = str(tmp_path_factory.mktemp("cluster"))
    env = _env(SPARKREC_CLUSTER_DIR=folder, SPARKREC_MASTER_PORT="7177", SPARKREC_MASTER_UI_PORT="8180")
    subprocess.run([str(SCRIPT), "start"], check=True, env=env, cwd=ROOT)
    try:
        yield {"master": "spark://127.0.0.1:7177", "env": env, "dir": folder}
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def cleaned(sample_snapshot: Path) -> Path:
    """The sample's first days cleaned and embedded (``lakehouse/``), and the landing zone with DAY."""
    return sample_snapshot


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["SPARKREC_SPARK_LOG_LEVEL"] = "WARN"  # lost executors and retried tasks are WARN lines
    return {**env, **extra}


def _copy(cleaned: Path, dest: Path) -> Path:
    shutil.copytree(cleaned / "lakehouse", dest / "lakehouse")
    return dest


def _sets(root: Path, landing: Path) -> list[str]:
    sets = [
        *SETTINGS,
        f"lakehouse.root={root / 'lakehouse'}",
        f"landing.root={landing}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_location={root / 'mlartifacts'}",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def _submit(
    cluster: dict,
    job: str,
    root: Path,
    landing: Path,
    *extra: str,
    options: tuple[str, ...] = (),
    env: dict | None = None,
) -> subprocess.Popen:
    """spark-submit jobs/<job>.py to the cluster as the README says (plus spark-submit ``options``);
    its output goes to root/driver.log."""
    args = subprocess.run(
        [str(SCRIPT), "submit-args"],
        check=True,
        capture_output=True,
        text=True,
        env={**cluster["env"], "SPARKREC_MASTER_PORT": cluster["master"].rsplit(":", 1)[1]},
        cwd=ROOT,
    ).stdout.split()
    assert args[:2] == ["--master", cluster["master"]]
    cmd = [
        str(ROOT / ".venv" / "bin" / "spark-submit"),
        *args,
        *options,
        str(ROOT / "jobs" / f"{job}.py"),
        "--date",
        DAY,
        "--conf",
        str(ROOT / "conf" / "cluster-local.yaml"),
        *_sets(root, landing),
        *extra,
    ]
    return _start(cmd, root, env or cluster["env"])


def _start(cmd: list[str], root: Path, env: dict | None = None) -> subprocess.Popen:
    # One file, as an operator sees it (spark-submit sends the Python driver's stderr to its stdout);
    # a file, not a pipe, so a chatty run cannot stall.
    return subprocess.Popen(
        cmd,
        cwd=root,
        env=env or _env(),
        stdout=open(root / "driver.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, root: Path, timeout: int = 480) -> tuple[int, dict, str]:
    """Wait for the run; its exit code, the result JSON it printed (or {}), and its log."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the job ran over {timeout} s:\n{(root / 'driver.log').read_text()[-3000:]}")
    log = (root / "driver.log").read_text()
    lines = log.splitlines()
    # The result JSON the CLI prints last: from a line "{" to a line "}".
    if "{" in lines and "}" in lines:
        first, last = lines.index("{"), len(lines) - 1 - lines[::-1].index("}")
        return proc.returncode, json.loads("\n".join(lines[first : last + 1])), log
    return proc.returncode, {}, log


def _check_lists(spark, lakehouse: Path) -> list[str]:
    """The recommendations contract for DAY: every active user, K distinct unseen items, ranks 1..K."""
    return assert_lists_contract(spark, make_config(lakehouse.parent, lakehouse.parent / "unused.db"), DAY, K)


def _executors(ui: str) -> list[dict]:
    """The application's executors, from the driver's REST API (none while it does not answer)."""
    try:
        with urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=5) as response:
            app = json.load(response)[0]["id"]
        with urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/executors", timeout=5) as response:
            return [e for e in json.load(response) if e["id"] != "driver"]
    except OSError:
        return []


def _executor_jvm(executor_id: str) -> int:
    """The pid of the executor JVM with this id (CoarseGrainedExecutorBackend ... --executor-id N)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args:
            i = args.index(b"--executor-id")
            if args[i + 1].decode() == executor_id:
                return int(proc.name)
    raise AssertionError(f"no JVM for executor {executor_id}")


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared in the driver log")


@pytest.mark.cluster
def test_nightly_on_the_cluster_survives_a_killed_executor(spark, cluster, cleaned, tmp_path: Path) -> None:
    root = _copy(cleaned, tmp_path)
    proc = _submit(cluster, "nightly", root, cleaned / "landing")
    ui = _wait_for_line(root / "driver.log", "Spark UI: http", proc).rsplit("Spark UI: ", 1)[1].strip()
    _wait_for_line(root / "driver.log", f"stage clean {DAY}: started", proc)
    # SIGKILL the JVM of an executor while it runs a task; its worker launches a new one.
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        busy = [e["id"] for e in _executors(ui) if e["activeTasks"] > 0]
        victim = busy[0] if busy else None
        time.sleep(0.05)
    assert victim is not None, "no executor ever ran a task"
    os.kill(_executor_jvm(victim), signal.SIGKILL)
    code, result, log = _finish(proc, root)
    assert code == 0, log[-4000:]
    assert f"Lost executor {victim}" in log, log[-4000:]
    assert result["recommend"]["users"] == len(_check_lists(spark, root / "lakehouse"))
    # TorchDistributor(local_mode=False): one training process in each executor's task folder.
    placement = result["train"]["placement"]
    assert len(placement) == 2 and len({p["cwd"] for p in placement}) == 2, placement
    assert all("/app-" in p["cwd"] for p in placement), placement
    # The replacement executor: the application's folders on the workers hold three executors.
    app = placement[0]["cwd"].rstrip("/").split("/")[-2]
    executor_dirs = [d for work in Path(cluster["dir"]).glob("work-*") for d in (work / app).glob("*")]
    assert len(executor_dirs) >= 3, executor_dirs
    for stage in ("clean", "embed", "train", "evaluate", "recommend"):
        assert f"stage {stage} {DAY}: finished in" in log


@pytest.mark.cluster
def test_the_cluster_gives_the_answers_of_local_mode(spark, cluster, cleaned, tmp_path: Path) -> None:
    """The same nightly, once as `sparkrec nightly` in local mode and once through spark-submit on the cluster."""
    local, remote = _copy(cleaned, tmp_path / "local"), _copy(cleaned, tmp_path / "cluster")
    started = time.perf_counter()
    code, local_result, log = _finish(
        _start(
            [
                sys.executable,
                "-m",
                "sparkrec.cli",
                "nightly",
                "--date",
                DAY,
                "--conf",
                str(ROOT / "conf" / "local.yaml"),
                *_sets(local, cleaned / "landing"),
            ],
            local,
        ),
        local,
    )
    local_s = time.perf_counter() - started
    assert code == 0, log[-4000:]
    started = time.perf_counter()
    code, cluster_result, log = _finish(_submit(cluster, "nightly", remote, cleaned / "landing"), remote)
    cluster_s = time.perf_counter() - started
    assert code == 0, log[-4000:]
    print(f"\nnightly {DAY} wall time: local mode {local_s:.0f} s, two-worker cluster {cluster_s:.0f} s")
    assert _check_lists(spark, local / "lakehouse") == _check_lists(spark, remote / "lakehouse")
    assert local_result["train"]["placement"][0]["cwd"] == str(local)  # local mode: ranks beside the driver
    assert "/app-" in cluster_result["train"]["placement"][0]["cwd"]
    for source in ("two_tower", "popularity"):
        ours, theirs = local_result["evaluate"]["metrics"][source], cluster_result["evaluate"]["metrics"][source]
        assert ours["users"] == theirs["users"] > 0
        for metric in (f"precision@{K}", f"recall@{K}", f"ndcg@{K}", "map", f"hit@{K}"):
            assert theirs[metric] == pytest.approx(ours[metric], abs=METRIC_TOLERANCE), (source, metric)


@pytest.mark.cluster
def test_a_killed_training_process_fails_the_stage_and_the_rerun_resumes(cluster, cleaned, tmp_path: Path) -> None:
    root = _copy(cleaned, tmp_path)
    epochs = ["--set", "train.epochs=60"]  # long enough to kill a process mid-run
    proc = _submit(cluster, "train", root, cleaned / "landing", *epochs)
    # As soon as an epoch is checkpointed, SIGKILL one training process.
    deadline = time.monotonic() + 240
    while not list((root / "lakehouse" / "_checkpoints").glob("train/*/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, (root / "driver.log").read_text()[-3000:]
        time.sleep(0.05)
    os.kill(_training_process(), signal.SIGKILL)
    code, _, log = _finish(proc, root)
    assert code == 2, log[-4000:]
    errors = [line for line in log.splitlines() if line.startswith("sparkrec: error:")]
    assert len(errors) == 1, log[-3000:]
    assert "training failed after" in errors[0] and "re-run the train stage to resume" in errors[0], errors[0]
    assert "died without a Python error" in errors[0], errors[0]  # the killed rank is named
    done = int(errors[0].split("training failed after ", 1)[1].split(" ", 1)[0])
    assert done >= 1
    (root / "driver.log").rename(root / "driver-failed.log")
    code, result, log = _finish(_submit(cluster, "train", root, cleaned / "landing", *epochs), root)
    assert code == 0, log[-4000:]
    assert f"resuming after epoch {done}" in log
    assert len(result["loss"]) == 60 and result["model_version"] == "1"


def _training_process() -> int:
    """A training rank: the child of a torchrun agent (python -m torch.distributed.run)."""
    agents = set()
    procs = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        procs[int(proc.name)] = parent
        if b"torch.distributed.run" in args:
            agents.add(int(proc.name))
    ranks = [pid for pid, parent in procs.items() if parent in agents]
    assert ranks, "no training process found"
    return ranks[-1]


def _build_package(dest: Path) -> tuple[Path, Path]:
    """make wheel's two files: the wheel and the same archive as a .zip for --py-files."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dest),
            str(ROOT),
        ],
        check=True,
        cwd=ROOT,
    )
    wheel = next(dest.glob("sparkrec-*-py3-none-any.whl"))
    archive = dest / wheel.name.replace("-py3-none-any.whl", ".zip")
    shutil.copy(wheel, archive)
    return wheel, archive


def test_the_wheel_holds_the_package_and_leaves_spark_to_the_cluster(tmp_path: Path) -> None:
    import zipfile

    wheel, _ = _build_package(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {"sparkrec/cli.py", "sparkrec/models/training.py", "sparkrec/models/launch.py"} <= names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("Requires-Dist: torch") for r in requires)
    # pyspark and delta-spark only with the `spark` extra: a cluster keeps its own.
    assert all("extra ==" in r for r in requires if "pyspark" in r or "delta-spark" in r), requires


@pytest.mark.cluster
def test_the_code_reaches_the_executors_as_a_py_files_zip(cluster, cleaned, tmp_path: Path) -> None:
    """A Python with the heavy dependencies but without sparkrec runs the train stage from --py-files."""
    root = _copy(cleaned, tmp_path / "run")
    _, archive = _build_package(tmp_path / "dist")
    bare = Path((ROOT / ".venv" / ".deps").read_text().strip()).parents[2] / "bin" / "python"
    probe = subprocess.run([str(bare), "-c", "import sparkrec"], cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode != 0, "the bare Python must not have sparkrec installed"
    env = {**cluster["env"], "PYSPARK_PYTHON": str(bare), "PYSPARK_DRIVER_PYTHON": str(bare)}
    proc = _submit(cluster, "train", root, cleaned / "landing", options=("--py-files", str(archive)), env=env)
    code, result, log = _finish(proc, root)
    assert code == 0, log[-4000:]
    assert len(result["placement"]) == 2 and result["model_version"] == "1"


@pytest.mark.slow  # a spark-submit of its own
def test_spark_submit_without_the_delta_jars_says_how_to_pass_them(tmp_path: Path) -> None:
    cmd = [
        str(ROOT / ".venv" / "bin" / "spark-submit"),
        "--master",
        "local[1]",
        str(ROOT / "jobs" / "nightly.py"),
        "--date",
        DAY,
        *_sets(tmp_path, tmp_path / "landing"),
    ]
    code, _, log = _finish(_start(cmd, tmp_path), tmp_path, timeout=120)
    errors = [line for line in log.splitlines() if line.startswith("sparkrec: error:")]
    assert code == 2 and len(errors) == 1, log[-3000:]
    assert errors[0].startswith(
        "sparkrec: error: Delta Lake's classes are not on the driver's class path: "
        "pass --packages io.delta:delta-spark_"
    )
