"""Loss curves as inline SVG, rendered on the server: no chart library, nothing from a CDN."""

WIDTH, HEIGHT, PAD = 600, 220, 32


def _points(series, x_max, y_min, y_max):
    span = (y_max - y_min) or 1.0
    out = []
    for step, value in series:
        x = PAD + (WIDTH - 2 * PAD) * step / max(x_max, 1)
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - y_min) / span
        out.append(f"{x:.1f},{y:.1f}")
    return " ".join(out)


def loss_chart(metrics: dict | None, max_points: int = 300) -> dict | None:
    train = [(p["step"], p["loss"]) for p in (metrics or {}).get("train", [])]
    evals = [(p["step"], p["loss"]) for p in (metrics or {}).get("eval", [])]
    if not train:
        return None
    stride = max(1, len(train) // max_points)
    train = train[::stride] + ([train[-1]] if (len(train) - 1) % stride else [])
    values = [v for _, v in train + evals]
    y_min, y_max = min(values), max(values)
    x_max = max(s for s, _ in train + evals)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "train": _points(train, x_max, y_min, y_max),
        "eval": [{"xy": _points([p], x_max, y_min, y_max).split(",")} for p in evals],
        "y_min": round(y_min, 3),
        "y_max": round(y_max, 3),
        "x_max": x_max,
        "pad": PAD,
    }
