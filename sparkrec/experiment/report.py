"""An experiment's numbers: repeated runs folded into mean ± standard deviation, and the Markdown table."""

from __future__ import annotations

from typing import Any

import numpy as np


def aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over the runs; ``<metric>_std`` beside it when there was more than one."""
    out: dict[str, float] = {}
    for name in runs[0]:
        values = np.array([r[name] for r in runs], dtype=np.float64)
        out[name] = float(values.mean())
        if len(runs) > 1 and name != "users":
            out[f"{name}_std"] = float(values.std(ddof=1))
    return out


def one_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{m}={v:.4f}" for m, v in metrics.items() if not m.endswith("_std"))


def format_table(result: dict[str, Any]) -> str:
    """The result as a Markdown table: one row per model, the accuracy metrics, coverage and train time."""
    k = result["protocol"]["k"]
    columns = [
        f"ndcg@{k}",
        f"precision@{k}",
        f"recall@{k}",
        "map",
        f"map@{k}",
        f"mrr@{k}",
        f"hit@{k}",
        f"coverage@{k}",
        f"novelty@{k}",
        "train_s",
    ]
    models = result["models"]
    present = [c for c in columns if any(c in m for m in models.values())]
    lines = ["| model | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for name, metrics in models.items():
        cells = []
        for c in present:
            value = metrics.get(c)
            if value is None:
                cells.append("")
                continue
            digits = 1 if c == "train_s" or c.startswith("novelty") else 4
            std = metrics.get(f"{c}_std")
            cells.append(f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    p = result["protocol"]
    split = (
        f"{p['split']}, last {p['holdout_days']} days"
        if p["split"] == "chrono"
        else f"{p['split']}, ratio {p['ratio']}"
    )
    if "candidates" in p:
        split += (
            f" ({p['candidates']} held-out items are the candidates; picking {k} at random gives "
            f"recall@{k} {p[f'random_recall@{k}']:.4f})"
        )
    lines.append("")
    lines.append(
        f"{p['dataset']}: {split}, seed {p['seed']}, {p['users_evaluated']} users evaluated, "
        f"{p['train_interactions']} train / {p['test_interactions']} test interactions, {p['items']} items"
    )
    params = {m: v["params"] for m, v in models.items() if v.get("params")}
    for name, chosen in params.items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return "\n".join(lines)
