"""Influence of a finished run's training records on its held-out loss, written beside its adapter. No Django."""

from __future__ import annotations

import json
from pathlib import Path

from training.config import ProgressFn, Run
from training.evaluation import pass_size


def attribute(run: Run, output_dir: Path, report: ProgressFn, **loss) -> dict:
    """Influence of each training record on the held-out loss (on the trained sample's, with no held-out
    split); writes influence.json (and the per-question scores as influence.npz) and returns the summary
    the job keeps. ``loss``: another loss than the supervised one (``loss_fn`` and ``target`` of
    ``attribution.influence.compute``)."""
    import numpy as np

    from attribution import influence

    config, train_set = run.config, run.train_set
    questions = run.eval_set or [run.train_set[i] for i in range(min(len(train_set), 40))]
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
            methods=tuple(config.influence_methods),
            projection_dim=config.influence_projection_dim,
            aggregation=config.influence_aggregation,
            batch_size=pass_size(config),
            seed=config.seed,
        ),
        progress=lambda done, total: report({"event": "attributing", "done": done, "total": total}),
        **loss,
    )
    summary = {
        "default_method": next(m for m in influence.METHODS if m in result.scores),
        "parameters": result.parameters,
        "seconds": round(result.seconds, 3),
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
