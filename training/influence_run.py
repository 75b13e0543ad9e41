"""Influence of a finished run's training records on its held-out loss, written beside its adapter. No Django."""

from __future__ import annotations

import json
import math
from pathlib import Path

from training import distributed, modeling
from training.config import ProgressFn, Run, TrainConfig
from training.evaluation import pass_size


def questions_of(train_set: list, eval_set: list) -> list:
    """What influence is measured on: the held-out set, or with none, the first 40 trained records."""
    return eval_set or [train_set[i] for i in range(min(len(train_set), 40))]


def tracer(config: TrainConfig, model, pad_id: int, device: str, compute: dict, train_set, eval_set, steps: int):
    """The StepTrace that gathers tracincp while a supervised run trains, or None where it is not asked for
    or the run is shared by several processes (each would see its own share of the records)."""
    if "tracincp" not in config.influence_methods or distributed.world()[1] > 1:
        return None
    from attribution import influence
    from attribution.trace import StepTrace

    questions = questions_of(train_set, eval_set)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = influence.InfluenceConfig(projection_dim=config.influence_projection_dim)
    project_to = influence.projection(settings, trainable, len(train_set) + len(questions))

    def held_out(capture) -> list:
        with modeling.eager(compute):
            grads = influence.gradients(
                model,
                questions,
                capture=capture,
                batch_size=pass_size(config),
                pad_id=pad_id,
                device=device,
                per_token=True,
            )
        return grads

    every = max(1, math.ceil(steps / (config.influence_anchors - 1)))
    return StepTrace(model, len(train_set), held_out, project_to=project_to, seed=config.seed, every=every, steps=steps)


def attribute(run: Run, output_dir: Path, report: ProgressFn, **loss) -> dict:
    """Influence of each training record on the held-out loss (on the trained sample's, with no held-out
    split); writes influence.json (and the per-question scores as influence.npz) and returns the summary
    the job keeps. ``loss``: another loss than the supervised one (``loss_fn`` and ``target`` of
    ``attribution.influence.compute``)."""
    import numpy as np

    from attribution import influence

    config, train_set = run.config, run.train_set
    questions = questions_of(train_set, run.eval_set)
    methods = [m for m in config.influence_methods if m != "tracincp" or run.trace is not None] or ["datainf"]
    if "tracincp" in config.influence_methods and run.trace is None:
        message = "TracInCP is gathered in supervised runs on one process only: DataInf on the adapter stands in"
        report({"event": "log", "message": message})
    traced = run.trace.finish() if run.trace is not None else None
    total = len(train_set) + len(questions)
    report({"event": "attributing", "done": 0, "total": total})
    # No autocast: per-example gradients are taken in the adapter's fp32.
    result = influence.compute(
        run.model,
        train_set,
        questions,
        [str(e.source.get("contributor", "unknown")) for e in train_set],
        pad_id=run.tokenizer.pad_token_id,
        device=run.device,
        learning_rate=config.learning_rate,
        config=influence.InfluenceConfig(
            methods=tuple(methods),
            projection_dim=config.influence_projection_dim,
            aggregation=config.influence_aggregation,
            batch_size=pass_size(config),
            seed=config.seed,
        ),
        progress=lambda done, total: report({"event": "attributing", "done": done, "total": total}),
        traced=traced,
        **loss,
    )
    report({"event": "attributing", "done": total, "total": total})  # tracincp alone makes no pass to report
    summary = {
        "default_method": methods[0],  # the first the run asked for
        "parameters": result.parameters,
        "seconds": round(result.seconds + (traced["seconds"] if traced else 0.0), 3),
        "gradient_bytes": result.gradient_bytes,
        "contributors": result.contributors,
    }
    records = [
        {
            "content_hash": e.source.get("content_hash"),
            "contributor": e.source.get("contributor"),
            **{m: float(s[i].mean()) for m, s in result.scores.items()},
        }
        for i, e in enumerate(train_set)
    ]
    (output_dir / "influence.json").write_text(json.dumps({**summary, "records": records}, indent=1))
    np.savez_compressed(output_dir / "influence.npz", **{m: s.astype(np.float32) for m, s in result.scores.items()})
    return summary
