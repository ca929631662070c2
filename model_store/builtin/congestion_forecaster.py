"""The built-in model ``traffic-police.congestion-forecaster``: next-15-minute flow and congestion.

A small TorchScript network trained at build time (seeded, CPU, a few seconds) on a synthetic
city: :data:`INTERSECTIONS` signalised intersections, :data:`WEEKS` weeks of 15-minute flow per
lane with weekday/weekend daily profiles, day-to-day demand swings, autocorrelated noise, queues
that carry over when demand exceeds capacity, and random incidents (crashes, breakdowns) that cut
capacity — depressing the flow and raising congestion. The last :data:`HELD_OUT_WEEKS` weeks are
held out; the builder measures the forecast's MAE there against the seasonal-naive forecast
(same slot one week earlier) and the persistence forecast (the last reading).

Signature (batched along dimension 0):

- ``history``: FP32 ``[-1, N]`` (:data:`N_HISTORY` = 8) — the last eight 15-minute flow readings
  of an intersection, oldest first, in **vehicles per lane per 15 minutes** (divide the
  approach's count by its number of lanes);
- ``time_features``: FP32 ``[-1, 2]`` — ``[hour_of_day, day_of_week]`` of the slot to forecast:
  hour in ``[0, 24)`` (fractional, e.g. 17.25 for 17:15) and day 0 = Monday … 6 = Sunday (see
  :func:`time_features`);
- outputs ``flow_next`` FP32 ``[-1, 1]`` (vehicles per lane in the next 15 minutes),
  ``congestion_level`` INT64 ``[-1, 1]`` (0 free, 1 slow, 2 congested) and
  ``congestion_probs`` FP32 ``[-1, 3]`` (the level probabilities).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from model_store.formats import load_model
from model_store.formats.torchscript import save_torchscript
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec

__all__ = [
    "HELD_OUT_WEEKS",
    "INTERSECTIONS",
    "LEVELS",
    "NAME",
    "N_HISTORY",
    "PRODUCT",
    "SEED",
    "SLOTS_PER_DAY",
    "SLOTS_PER_WEEK",
    "WEEKS",
    "CongestionForecaster",
    "Samples",
    "SyntheticCity",
    "build",
    "samples",
    "synthetic_city",
    "time_features",
    "train",
]

NAME: Final = "traffic-police.congestion-forecaster"
"""The product handle the demo registers the model under."""

PRODUCT: Final[dict[str, Any]] = {
    "owner": "traffic-police",
    "name": "congestion-forecaster",
    "kind": "model",
    "title": "Intersection congestion forecaster",
    "description": (
        "Forecasts the next 15 minutes of traffic flow per lane and the congestion level (free, "
        "slow, congested) at a signalised intersection from the last two hours of readings."
    ),
    "domain": "traffic",
    "tags": ["forecasting", "congestion", "flow", "intersections", "torchscript"],
    "tier": "public",
}
"""Catalog fields for the seed (same order of meaning as ``marketplace.seed.PRODUCTS``)."""

N_HISTORY: Final = 8
"""Readings of history the model takes (two hours of 15-minute slots)."""
SLOTS_PER_DAY: Final = 96
SLOTS_PER_WEEK: Final = 7 * SLOTS_PER_DAY
INTERSECTIONS: Final = 12
WEEKS: Final = 10
HELD_OUT_WEEKS: Final = 2
SEED: Final = 20240515
LEVELS: Final[tuple[str, ...]] = ("free", "slow", "congested")
SLOW_RATIO: Final = 0.75
"""Demand (queue included) over capacity from which traffic is ``slow``."""
CONGESTED_RATIO: Final = 0.95
"""Demand (queue included) over capacity from which traffic is ``congested``."""
SCALE: Final = 100.0
"""Flows are divided by this inside the network."""
MAX_BATCH: Final = 256


class CongestionForecaster(torch.nn.Module):
    """MLP over the scaled history and encoded time, with a flow head and a level head.

    The flow head predicts the change from the last reading (a residual), so the network only
    learns the correction to persistence.

    Args:
        n_history: Readings of history.
        hidden: Width of the two hidden layers.
    """

    def __init__(self, n_history: int = N_HISTORY, hidden: int = 64) -> None:
        super().__init__()
        self.n_history = n_history
        self.scale = SCALE
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(n_history + 4 + 7, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
        )
        self.flow_head = torch.nn.Linear(hidden, 1)
        self.level_head = torch.nn.Linear(hidden, len(LEVELS))

    def encode(self, history: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
        """Build the network's input features.

        Args:
            history: FP32 ``[rows, n_history]`` flows per lane.
            time_features: FP32 ``[rows, 2]``: hour of day, day of week (0 = Monday).

        Returns:
            ``[rows, n_history + 11]``: scaled history, two harmonics of the hour, one-hot day.
        """
        angle = time_features[:, 0:1] * (2.0 * math.pi / 24.0)
        day = torch.remainder(torch.round(time_features[:, 1]), 7.0).to(torch.int64)
        return torch.cat(
            [
                history / self.scale,
                torch.sin(angle),
                torch.cos(angle),
                torch.sin(2.0 * angle),
                torch.cos(2.0 * angle),
                F.one_hot(day, 7).to(history.dtype),
            ],
            dim=1,
        )

    def logits(
        self, history: torch.Tensor, time_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs: the scaled next flow and the level logits.

        Args:
            history: FP32 ``[rows, n_history]``.
            time_features: FP32 ``[rows, 2]``.

        Returns:
            ``([rows, 1]`` next flow / SCALE, ``[rows, 3]`` level logits).
        """
        z = self.trunk(self.encode(history, time_features))
        return history[:, -1:] / self.scale + self.flow_head(z), self.level_head(z)

    def forward(
        self, history: torch.Tensor, time_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forecast the next slot.

        Args:
            history: FP32 ``[rows, n_history]``.
            time_features: FP32 ``[rows, 2]``.

        Returns:
            ``flow_next`` FP32 ``[rows, 1]`` (never negative), ``congestion_level`` INT64
            ``[rows, 1]`` and ``congestion_probs`` FP32 ``[rows, 3]``.
        """
        flow, logits = self.logits(history, time_features)
        probs = torch.softmax(logits, dim=1)
        level = torch.argmax(probs, dim=1, keepdim=True)
        return torch.clamp(flow * self.scale, min=0.0), level, probs


def time_features(slots: Sequence[datetime]) -> npt.NDArray[np.float32]:
    """The ``time_features`` input for the slots to forecast.

    Args:
        slots: Start time of each slot to forecast (local time).

    Returns:
        FP32 ``[len(slots), 2]``: fractional hour of day, day of week (0 = Monday).
    """
    return np.array(
        [[t.hour + t.minute / 60.0, float(t.weekday())] for t in slots], dtype=np.float32
    ).reshape(-1, 2)


@dataclass(frozen=True, slots=True)
class SyntheticCity:
    """Simulated 15-minute traffic at a few intersections, week 0 starting on a Monday 00:00.

    Attributes:
        flow: FP32 ``[intersections, slots]`` measured vehicles per lane.
        level: INT64 ``[intersections, slots]`` congestion level (0 free, 1 slow, 2 congested).
        incident: BOOL ``[intersections, slots]`` whether an incident cut capacity.
        hour: FP32 ``[slots]`` hour of day of each slot.
        day: FP32 ``[slots]`` day of week of each slot (0 = Monday).
    """

    flow: npt.NDArray[np.float32]
    level: npt.NDArray[np.int64]
    incident: npt.NDArray[np.bool_]
    hour: npt.NDArray[np.float32]
    day: npt.NDArray[np.float32]


def _profile(hour: npt.NDArray[np.float64], weekend: bool, shift: float) -> Any:
    h = hour - shift
    if weekend:
        return 0.12 + 0.55 * np.exp(-(((h - 14.0) / 3.5) ** 2) / 2)
    return (
        0.1
        + 0.9 * np.exp(-(((h - 8.0) / 1.1) ** 2) / 2)
        + 0.4 * np.exp(-(((h - 13.0) / 2.8) ** 2) / 2)
        + 0.85 * np.exp(-(((h - 18.0) / 1.4) ** 2) / 2)
    )


def synthetic_city(
    seed: int = SEED, intersections: int = INTERSECTIONS, weeks: int = WEEKS
) -> SyntheticCity:
    """Simulate the training and evaluation city (deterministic for a seed).

    Per intersection: a capacity of 190–240 vehicles per lane per 15 minutes; demand follows a
    weekday profile (morning and evening peaks, midday plateau) or a weekend profile, shifted by
    up to ±30 minutes, scaled by a random factor per day (±8 %) and by AR(1) noise; demand that
    exceeds capacity queues into the next slot; about two incidents a week last 30 minutes to
    two hours and cut capacity to 35–65 %. Measured flow is the served demand plus 4 % + 2
    vehicles of Gaussian counting noise. The level comes from (demand + queue) / capacity:
    below 0.75 free, below 0.95 slow, else congested.

    Args:
        seed: Random seed.
        intersections: How many intersections.
        weeks: How many weeks.

    Returns:
        The simulated city.
    """
    rng = np.random.default_rng(seed)
    slots = weeks * SLOTS_PER_WEEK
    index = np.arange(slots)
    hour = (index % SLOTS_PER_DAY) / 4.0
    day = (index // SLOTS_PER_DAY) % 7
    flow = np.zeros((intersections, slots))
    level = np.zeros((intersections, slots), dtype=np.int64)
    incident = np.zeros((intersections, slots), dtype=bool)
    for i in range(intersections):
        capacity = rng.uniform(190.0, 240.0)
        peak_ratio = rng.uniform(0.8, 1.1)
        shift = rng.uniform(-0.5, 0.5)
        weekday = _profile(hour[:SLOTS_PER_DAY], False, shift)
        weekend = _profile(hour[:SLOTS_PER_DAY], True, shift)
        base = (
            np.where(day >= 5, np.tile(weekend, weeks * 7), np.tile(weekday, weeks * 7))
            / weekday.max()
        )
        day_factor = np.repeat(rng.normal(1.0, 0.08, size=weeks * 7), SLOTS_PER_DAY)
        noise = np.zeros(slots)
        shocks = rng.normal(0.0, 0.05, size=slots)
        for t in range(1, slots):
            noise[t] = 0.7 * noise[t - 1] + shocks[t]
        demand = capacity * peak_ratio * base * day_factor * np.maximum(1.0 + noise, 0.2)
        cap = np.full(slots, capacity)
        for _ in range(rng.poisson(2.0 * weeks)):
            start = int(rng.integers(0, slots))
            length = int(rng.integers(2, 9))
            cap[start : start + length] = capacity * rng.uniform(0.35, 0.65)
            incident[i, start : start + length] = True
        queue = 0.0
        for t in range(slots):
            wanting = demand[t] + queue
            served = min(wanting, cap[t])
            ratio = wanting / cap[t]
            level[i, t] = 0 if ratio < SLOW_RATIO else (1 if ratio < CONGESTED_RATIO else 2)
            queue = wanting - served
            flow[i, t] = served
        flow[i] = np.maximum(flow[i] + rng.normal(0.0, 1.0, slots) * (0.04 * flow[i] + 2.0), 0)
    return SyntheticCity(
        flow=flow.astype(np.float32),
        level=level,
        incident=incident,
        hour=hour.astype(np.float32),
        day=day.astype(np.float32),
    )


@dataclass(frozen=True, slots=True)
class Samples:
    """Forecasting examples: inputs, targets and the seasonal-naive forecast of each target.

    Attributes:
        history: FP32 ``[rows, N_HISTORY]``.
        time_features: FP32 ``[rows, 2]``.
        flow_next: FP32 ``[rows]`` the true next flow.
        level_next: INT64 ``[rows]`` the true next level.
        seasonal_naive: FP32 ``[rows]`` the flow of the same slot one week earlier.
        seasonal_naive_level: INT64 ``[rows]`` the level of the same slot one week earlier.
    """

    history: npt.NDArray[np.float32]
    time_features: npt.NDArray[np.float32]
    flow_next: npt.NDArray[np.float32]
    level_next: npt.NDArray[np.int64]
    seasonal_naive: npt.NDArray[np.float32]
    seasonal_naive_level: npt.NDArray[np.int64]


def samples(city: SyntheticCity, first_slot: int, end_slot: int) -> Samples:
    """Every intersection's forecasting examples whose target slot lies in a range.

    Args:
        city: The simulated city.
        first_slot: First target slot (at least one week in, for the seasonal-naive forecast).
        end_slot: One past the last target slot.

    Returns:
        The examples, intersection by intersection.

    Raises:
        ValueError: If ``first_slot`` leaves no week of history.
    """
    if first_slot < SLOTS_PER_WEEK:
        raise ValueError("targets need one week of history for the seasonal-naive forecast")
    targets = np.arange(first_slot, end_slot)
    windows = targets[:, None] + np.arange(-N_HISTORY, 0)[None, :]
    rows = city.flow.shape[0]
    return Samples(
        history=np.concatenate([city.flow[i][windows] for i in range(rows)]),
        time_features=np.tile(np.stack([city.hour[targets], city.day[targets]], axis=1), (rows, 1)),
        flow_next=city.flow[:, targets].reshape(-1),
        level_next=city.level[:, targets].reshape(-1),
        seasonal_naive=city.flow[:, targets - SLOTS_PER_WEEK].reshape(-1),
        seasonal_naive_level=city.level[:, targets - SLOTS_PER_WEEK].reshape(-1),
    )


def train(data: Samples, *, seed: int = SEED, epochs: int = 20) -> CongestionForecaster:
    """Train the network with Adam on L1 flow loss plus level cross-entropy.

    Args:
        data: Training examples.
        seed: Seeds the initial weights and the shuffling.
        epochs: Passes over the data.

    Returns:
        The trained network, in eval mode.
    """
    torch.manual_seed(seed)
    model = CongestionForecaster()
    history = torch.from_numpy(data.history)
    times = torch.from_numpy(data.time_features)
    flow = torch.from_numpy(data.flow_next).unsqueeze(1) / SCALE
    level = torch.from_numpy(data.level_next)
    weights = torch.from_numpy(
        (len(level) / (len(LEVELS) * np.maximum(np.bincount(data.level_next, minlength=3), 1)))
        .clip(max=2.0)
        .astype(np.float32)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * math.ceil(len(level) / 512)
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(level), generator=generator)
        for start in range(0, len(level), 512):
            batch = order[start : start + 512]
            predicted_flow, logits = model.logits(history[batch], times[batch])
            loss = F.l1_loss(predicted_flow, flow[batch]) + 0.2 * F.cross_entropy(
                logits, level[batch], weight=weights
            )
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            schedule.step()
    return model.eval()


def _macro_f1(truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    scores = []
    for k in range(len(LEVELS)):
        tp = float(np.sum((predicted == k) & (truth == k)))
        fp = float(np.sum((predicted == k) & (truth != k)))
        fn = float(np.sum((predicted != k) & (truth == k)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(scores))


def _evaluate(path: Path, manifest: ModelManifest, data: Samples) -> dict[str, float]:
    model = load_model(manifest, path)
    try:
        flows, levels = [], []
        for start in range(0, len(data.flow_next), MAX_BATCH):
            out = model.predict(
                {
                    "history": data.history[start : start + MAX_BATCH],
                    "time_features": data.time_features[start : start + MAX_BATCH],
                }
            )
            flows.append(out["flow_next"][:, 0])
            levels.append(out["congestion_level"][:, 0])
    finally:
        model.close()
    flow = np.concatenate(flows)
    level = np.concatenate(levels)
    truth = data.flow_next
    mae = float(np.mean(np.abs(flow - truth)))
    mae_naive = float(np.mean(np.abs(data.seasonal_naive - truth)))
    mae_persistence = float(np.mean(np.abs(data.history[:, -1] - truth)))
    return {
        "mae": round(mae, 3),
        "mae_seasonal_naive": round(mae_naive, 3),
        "mae_persistence": round(mae_persistence, 3),
        "skill_vs_seasonal_naive": round(1.0 - mae / mae_naive, 4),
        "level_accuracy": round(float(np.mean(level == data.level_next)), 4),
        "level_accuracy_seasonal_naive": round(
            float(np.mean(data.seasonal_naive_level == data.level_next)), 4
        ),
        "level_macro_f1": round(_macro_f1(data.level_next, level), 4),
        "level_macro_f1_seasonal_naive": round(
            _macro_f1(data.level_next, data.seasonal_naive_level), 4
        ),
        "mean_flow": round(float(np.mean(truth)), 3),
        "test_samples": float(len(truth)),
    }


_CARD = """# Intersection congestion forecaster (`{name}`)

**Purpose.** Gives signal control and traffic dispatch a 15-minute look-ahead at each signalised
intersection: how many vehicles per lane will pass, and whether traffic will be free, slow or
congested — so that officers and signal plans can be moved before a queue builds up.

**Inputs** (batched, up to {max_batch} rows per call).
- `history`: FP32 `[-1, {n}]` — the last {n} readings (two hours) of 15-minute flow, oldest
  first, in **vehicles per lane** (the approach's count divided by its number of lanes);
- `time_features`: FP32 `[-1, 2]` — `[hour_of_day, day_of_week]` of the slot to forecast: hour
  in `[0, 24)`, fractional (17:15 → 17.25); day 0 = Monday … 6 = Sunday.

**Outputs.**
- `flow_next`: FP32 `[-1, 1]` — forecast vehicles per lane in the next 15 minutes (≥ 0);
- `congestion_level`: INT64 `[-1, 1]` — 0 free, 1 slow, 2 congested (the most probable);
- `congestion_probs`: FP32 `[-1, 3]` — the probabilities of the three levels.

**Model.** A two-layer MLP (64 units) over the scaled history, two harmonics of the hour and a
one-hot weekday; the flow head predicts the change from the last reading. Trained at build time
(seed {seed}, Adam, L1 flow loss + class-weighted cross-entropy for the level) on a synthetic
city: {intersections} intersections × {weeks} weeks of 15-minute flow per lane with weekday and
weekend profiles, day-to-day demand swings, autocorrelated noise, queues that carry over when
demand exceeds capacity, and random incidents (30 min–2 h, capacity cut to 35–65 %). The level
is defined from (demand + queue) / capacity: < {slow} free, < {congested} slow, else congested.

**Evaluation** (measured at build time on the last {held_out} weeks, held out from training;
{test_samples:.0f} forecasts; mean flow {mean_flow:.1f} vehicles per lane):

| forecast | flow MAE (vehicles/lane/15 min) | level accuracy | level macro-F1 |
|---|---|---|---|
| this model | **{mae:.3f}** | {level_accuracy:.4f} | {level_macro_f1:.4f} |
{naive_row}
| persistence (last reading) | {mae_persistence:.3f} | – | – |

Skill against the seasonal-naive forecast: {skill_pct:.1f}% lower MAE.

**Limits.** Trained on **synthetic** data only: before operational use, retrain on the city's
detector data (`traffic-police.intersection-flow`) and re-measure. It knows no holidays, events,
weather or road works, cannot foresee an incident before it shows in the readings, and forecasts
one step (15 minutes) ahead only. Readings must be complete: impute gaps before the call.
Per-lane flows far outside 0–300 are out of the training range.
"""


def build(dest_dir: str | os.PathLike[str]) -> tuple[Path, ModelManifest]:
    """Simulate the city, train, save the TorchScript artifact and measure it on held-out weeks.

    Args:
        dest_dir: Folder to write ``congestion_forecaster.pt`` into (created if needed).

    Returns:
        The artifact's path and its manifest (batched, max batch size 256), whose metrics hold
        the held-out MAE of the model and of the seasonal-naive and persistence forecasts.
    """
    target = Path(dest_dir)
    target.mkdir(parents=True, exist_ok=True)
    city = synthetic_city()
    split = (WEEKS - HELD_OUT_WEEKS) * SLOTS_PER_WEEK
    model = train(samples(city, SLOTS_PER_WEEK, split))
    path = save_torchscript(model, target / "congestion_forecaster.pt")
    manifest = ModelManifest(
        format="torchscript",
        inputs=[
            TensorSpec(name="history", datatype="FP32", shape=[-1, N_HISTORY]),
            TensorSpec(name="time_features", datatype="FP32", shape=[-1, 2]),
        ],
        outputs=[
            TensorSpec(name="flow_next", datatype="FP32", shape=[-1, 1]),
            TensorSpec(name="congestion_level", datatype="INT64", shape=[-1, 1]),
            TensorSpec(name="congestion_probs", datatype="FP32", shape=[-1, len(LEVELS)]),
        ],
        batching=BatchingConfig(max_batch_size=MAX_BATCH, max_queue_delay_ms=2.0),
    )
    metrics = _evaluate(path, manifest, samples(city, split, city.flow.shape[1]))
    card = _CARD.format(
        name=NAME,
        max_batch=MAX_BATCH,
        n=N_HISTORY,
        seed=SEED,
        intersections=INTERSECTIONS,
        weeks=WEEKS,
        held_out=HELD_OUT_WEEKS,
        slow=SLOW_RATIO,
        congested=CONGESTED_RATIO,
        skill_pct=100 * metrics["skill_vs_seasonal_naive"],
        naive_row=(
            f"| seasonal naive (same slot last week) | {metrics['mae_seasonal_naive']:.3f} | "
            f"{metrics['level_accuracy_seasonal_naive']:.4f} | "
            f"{metrics['level_macro_f1_seasonal_naive']:.4f} |"
        ),
        **metrics,
    )
    return path, manifest.model_copy(update={"metrics": metrics, "model_card": card})
