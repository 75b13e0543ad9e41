"""Loss curves as inline SVG, rendered on the server: no chart library, nothing from a CDN.

The raw training loss is drawn faint with a smoothed line over it (an exponential moving average,
debiased at the start as TensorBoard does), the held-out losses as dots, on axes with step numbers.
"""

import math

WIDTH, HEIGHT, PAD, LEFT = 600, 240, 28, 52
SMOOTHING = 0.8


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: the first points are not pulled towards zero."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers (steps of 1, 2 or 5 times a power of ten) from ``low`` to ``high``."""
    span = (high - low) or abs(high) or 1.0
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


class _Scale:
    def __init__(self, x_max: float, y_min: float, y_max: float):
        self.x_max, self.y_min, self.span = max(x_max, 1), y_min, (y_max - y_min) or 1.0

    def x(self, step: float) -> float:
        return LEFT + (WIDTH - LEFT - PAD) * step / self.x_max

    def y(self, value: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - self.y_min) / self.span

    def points(self, series) -> str:
        return " ".join(f"{self.x(s):.1f},{self.y(v):.1f}" for s, v in series)


def _label(value: float) -> str:
    return f"{value:.3g}"


def loss_chart(metrics: dict | None, max_points: int = 300) -> dict | None:
    train = [(p["step"], p["loss"]) for p in (metrics or {}).get("train", [])]
    evals = [(p["step"], p["loss"]) for p in (metrics or {}).get("eval", [])]
    if not train:
        return None
    smoothed = list(zip([s for s, _ in train], smooth([v for _, v in train]), strict=True))
    stride = max(1, len(train) // max_points)
    keep = lambda series: series[::stride] + ([series[-1]] if (len(series) - 1) % stride else [])  # noqa: E731
    train, smoothed = keep(train), keep(smoothed)
    values = [v for _, v in train + evals]
    y_min, y_max = min(values), max(values)
    x_max = max(s for s, _ in train + evals)
    scale = _Scale(x_max, y_min, y_max)
    x_ticks = [t for t in nice_ticks(0, x_max) if t == int(t)]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - PAD,
        "top": PAD,
        "bottom": HEIGHT - PAD,
        "train": scale.points(train),
        "smoothed": scale.points(smoothed),
        "eval": [{"xy": (f"{scale.x(s):.1f}", f"{scale.y(v):.1f}"), "step": s, "loss": round(v, 4)} for s, v in evals],
        "x_ticks": [{"at": f"{scale.x(t):.1f}", "label": str(int(t))} for t in x_ticks],
        "y_ticks": [{"at": f"{scale.y(t):.1f}", "label": _label(t)} for t in nice_ticks(y_min, y_max, 4)],
        "y_min": round(y_min, 3),
        "y_max": round(y_max, 3),
        "x_max": x_max,
        "last_smoothed": round(smoothed[-1][1], 4),
    }
