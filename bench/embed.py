"""Item-text embedding throughput: the Spark pandas-UDF path against a plain single-process encoder.

    .venv/bin/python bench/embed.py [--items 10000,100000] [--output bench/results/embed.json]

For each catalogue size, in the same run on the same machine, with the same model (the packaged
all-MiniLM-L6-v2, or ``embed.model_path``), batch size and ``max_length``:

(a) **udf**: ``embed.make_embed_udf`` over a DataFrame of the item texts, one partition per core
    (Spark's ``local[*]``; each task's torch uses the cores Spark gives it), forced with the ``noop``
    sink, exactly as the embed stage runs it;
(b) **plain**: ``SentenceTransformer.encode`` in this process, torch using every core (or the GPU).

Both are timed after a warm-up on 512 texts, so start-up and model loading are reported apart
(``*_warmup_s``). Peak memory: the largest resident set of one Spark Python worker (``udf``), and
of this Python process alone (``plain``; it also holds the driver's Python side), sampled every 0.2 s.
Texts are synthetic product texts (a title and a
short description, 10 to 60 tokens) built from the words of the bundled Online Retail sample,
seeded, so every run embeds the same catalogue.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import PeakMemory, machine, write_report  # noqa: E402

from sparkrec import embed  # noqa: E402
from sparkrec.config import load_config  # noqa: E402
from sparkrec.session import build_session  # noqa: E402

SAMPLE = ROOT / "data" / "online-retail" / "online_retail_2010-12.csv.gz"
WARMUP = 512
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def catalogue_texts(n: int, seed: int = 7) -> list[str]:
    """``n`` product texts: a title of 2-6 sample words, then a description of 5-40 words."""
    words: set[str] = set()
    with gzip.open(SAMPLE, "rt", encoding="utf-8", errors="replace") as handle:
        next(handle)
        for line in handle:
            fields = line.split(",")
            if len(fields) > 2:
                words.update(w.lower() for w in fields[2].split() if w.isalpha())
    vocabulary = sorted(words)
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        title = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 6))).upper()
        description = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(5, 40)))
        texts.append(f"{title}. {description}")
    return texts


class SelfPeak(PeakMemory):
    """Largest RSS of this process alone (not the Spark JVM beside it) while the block runs."""

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            self.peak = max(self.peak, me.memory_info().rss)
            time.sleep(0.2)


class WorkerPeak(PeakMemory):
    """Largest RSS of a single Spark Python worker process while the block runs."""

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    if "pyspark" in " ".join(proc.cmdline()):
                        self.peak = max(self.peak, proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.2)


def run_udf(spark, texts: list[str], config) -> tuple[float, float, int]:  # noqa: ANN001
    """Seconds for the warm-up and the timed pass of the UDF path, and the peak worker RSS."""
    udf = embed.make_embed_udf(config.embed)
    partitions = spark.sparkContext.defaultParallelism

    def frame(items: list[str]):  # noqa: ANN202
        return spark.createDataFrame([(t,) for t in items], "text string").repartition(partitions)

    start = time.perf_counter()
    frame(texts[:WARMUP]).select(udf("text").alias("v")).write.format("noop").mode("overwrite").save()
    warmup = time.perf_counter() - start
    data = frame(texts).cache()
    data.count()  # the texts in Spark's memory before the clock starts, as a table scan would give them
    with WorkerPeak() as memory:
        start = time.perf_counter()
        data.select(udf("text").alias("v")).write.format("noop").mode("overwrite").save()
        timed = time.perf_counter() - start
    data.unpersist()
    return warmup, timed, memory.peak


def run_plain(texts: list[str], config) -> tuple[float, float, int]:  # noqa: ANN001
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    with SelfPeak() as memory:
        start = time.perf_counter()
        model = SentenceTransformer(embed.resolve_model_path(config.embed), device=DEVICE)
        model.max_seq_length = config.embed.max_length
        model.encode(texts[:WARMUP], batch_size=config.embed.batch_size, normalize_embeddings=True)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        model.encode(texts, batch_size=config.embed.batch_size, normalize_embeddings=True)
        timed = time.perf_counter() - start
    return warmup, timed, memory.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000", help="comma-separated catalogue sizes")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "embed.json"))
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = load_config(None, ["spark.show_progress=false", *args.set])
    spark = build_session(config)
    setting = {
        "model": embed.model_name(config.embed),
        "batch_size": config.embed.batch_size,
        "max_length": config.embed.max_length,
        "machine": machine(spark, torch=torch.__version__, device=DEVICE),
    }
    # Keyed by catalogue size; each entry carries the setting it was measured in.
    report: dict[str, dict[str, object]] = {}
    for n in [int(x) for x in args.items.split(",")]:
        texts = catalogue_texts(n)
        udf_warmup, udf_s, udf_rss = run_udf(spark, texts, config)
        plain_warmup, plain_s, plain_rss = run_plain(texts, config)
        result = {
            "udf_items_per_s": round(n / udf_s, 1),
            "plain_items_per_s": round(n / plain_s, 1),
            "ratio": round(plain_s / udf_s, 3),
            "udf_s": round(udf_s, 1),
            "plain_s": round(plain_s, 1),
            "udf_warmup_s": round(udf_warmup, 1),
            "plain_warmup_s": round(plain_warmup, 1),
            "udf_peak_worker_rss_gib": round(udf_rss / 2**30, 2),
            "plain_peak_rss_gib": round(plain_rss / 2**30, 2),
        }
        print(json.dumps({"items": n, **result}), flush=True)
        report[str(n)] = {**result, **setting}
    write_report(args.output, report)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
