"""Training one model on one dataset: the function a standalone run and a Ray Tune trial share.

Fast path: the training split's extra features and standardised targets are computed once (in
chunks, float64 arithmetic, float32 storage) and go to the device once with its inputs; every
epoch draws one permutation and each batch gathers its rows (no DataLoader, no per-epoch copy
of the data: a run holds about twice its float32 training data, see docs/train.md).
AdamW, linear warm-up then cosine decay (or reduce-on-plateau), gradient clipping, early
stopping, TF32/bf16 on GPU as options. The best epoch, whose weights a run keeps and exports,
is the one of the lowest validation P95 position error (BEST_METRIC), what a search ranks. A
non-finite loss ends the run with status "failed", never an exception in the caller.

The options and the result are in :mod:`raytrack.models.train_config`, the standardisation and
the loss in :mod:`raytrack.models.targets`, the checkpoint files in
:mod:`raytrack.models.checkpoints`; their names are importable from here too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raytrack.models.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    check_checkpoint_format,
    save_checkpoint,
)
from raytrack.models.jacobian import standardised_with_jacobian_error
from raytrack.models.metrics import position_errors, slope_errors
from raytrack.models.mlp import N_INPUTS, ColumnMoments, ModelConfig, Normalisation, TrackMLP
from raytrack.models.targets import standardisation, training_loss
from raytrack.models.train_config import (
    BEST_METRIC,
    VALIDATION_METRICS,
    EpochCallback,
    TrainConfig,
    TrainResult,
)
from raytrack.physics.axis_profile import AxisProfile
from raytrack.physics.path_nodes import choose_path_nodes
from raytrack.physics.transports import straight_line

__all__ = [
    "PREPARE_CHUNK",
    "encoding_truth",
    "path_nodes_for",
    "train_model",
]

#: Rows prepared at once: bounds the float64 temporaries of the feature computation, which a
#: map's x terms make the largest per row (docs/benchmarks.md, "Training").
PREPARE_CHUNK = 1 << 13


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    *,
    axis: AxisProfile | None = None,
    jacobians: np.ndarray | None = None,
    bending: np.ndarray | None = None,
    validation_bending: np.ndarray | None = None,
    device: str = "cpu",
    checkpoint_dir: str | Path | None = None,
    callback: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model_config`` on (inputs (N, 7), targets (N, 4)) arrays (float32 or float64).

    ``axis``: the dataset's on-axis field profile, for formulations that read it.
    ``bending``, ``validation_bending``: the splits' float32 bending (``Split.bending``), read
    only while the targets are encoded.
    ``jacobians``: the training split's (N, 4, 5) transport Jacobians, needed when
    ``train_config.jacobian_weight`` is not 0 (datasets generated with --jacobian). With
    ``checkpoint_dir``, a checkpoint is written there after every epoch and, when one is
    already there, training resumes from it. The returned model holds the best weights (those of
    the epoch of the lowest BEST_METRIC, the validation P95 position error).
    """
    dev = torch.device(device)
    _configure_precision(train_config, dev)
    torch.manual_seed(train_config.seed)
    if train_config.jacobian_weight and jacobians is None:
        raise ValueError(
            "training option jacobian_weight needs the transport Jacobians of the training "
            "tracks: generate the dataset with python -m raytrack.generate --jacobian"
        )
    model = TrackMLP(model_config, axis=axis, path_nodes=path_nodes_for(model_config, axis, train))
    model = model.to(dev)
    loop = _Loop(
        model, model_config, train_config, train, validation, dev, jacobians,
        (bending, validation_bending),
    )  # fmt: skip
    # The bending's one use is the targets' encoding, done: a caller that hands it over (as
    # raytrack.run.pipeline does with a dataset it loaded itself) gets its memory back now.
    bending = validation_bending = None
    ckpt_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    if ckpt_path and ckpt_path.exists():
        loop.restore(torch.load(ckpt_path, map_location=dev, weights_only=True))
    return loop.run(ckpt_path, callback)


def encoding_truth(
    inputs: np.ndarray, truth: np.ndarray, bending: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 inputs the network sees and the float64 truth its targets are encoded from:
    the straight line of those rounded inputs plus the bending (``bending``, else the given
    truth's over the given inputs), so that no rounding of positions reaches the targets
    (docs/models.md, "Target precision")."""
    given = np.asarray(inputs, np.float64)
    if bending is None:
        bend = np.asarray(truth, np.float64) - straight_line(given)
    else:
        bend = np.asarray(bending, np.float64)
    x = _float32_tensor(given)
    return x, straight_line(x.double()) + torch.from_numpy(bend)


def _encoding_chunks(
    inputs: np.ndarray, truth: np.ndarray, bending: np.ndarray | None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Each chunk's first row and :func:`encoding_truth`, :data:`PREPARE_CHUNK` rows at a time:
    the float64 temporaries of a whole split would set a run's peak memory."""
    for lo in range(0, len(inputs), PREPARE_CHUNK):
        rows = slice(lo, lo + PREPARE_CHUNK)
        x, y = encoding_truth(inputs[rows], truth[rows], None if bending is None else bending[rows])
        yield lo, x, y


def _encoded_truth_by_chunks(
    inputs: np.ndarray, truth: np.ndarray, bending: np.ndarray | None
) -> torch.Tensor:
    """The truth of :func:`encoding_truth` (its inputs the given ones rounded to float32), made
    by chunks."""
    parts = [y for _, _, y in _encoding_chunks(inputs, truth, bending)]
    return torch.cat(parts) if parts else torch.empty(0, 4, dtype=torch.float64)


def path_nodes_for(config: ModelConfig, axis: AxisProfile | None, train) -> int | None:
    """The path base's quadrature nodes, as few as the dataset's field and legs allow."""
    if config.base != "path" or axis is None:
        return None
    tables = TrackMLP(config, axis=axis).formulation.tables()
    return choose_path_nodes(tables, torch.from_numpy(np.asarray(train[0])))


def _configure_precision(config: TrainConfig, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.precision in ("tf32", "bf16")
        torch.backends.cudnn.allow_tf32 = config.precision in ("tf32", "bf16")


class _Loop:
    """The state of one training run: model, optimiser, schedule, history, best weights."""

    def __init__(
        self,
        model,
        model_config,
        config,
        train,
        validation,
        device,
        jacobians=None,
        bending=(None, None),
    ) -> None:
        self.model, self.config, self.device = model, config, device
        self.model_config = model_config
        self.x_extra, self.t_train = self._fit_and_prepare(train, bending[0])
        self.y_val = torch.from_numpy(np.asarray(validation[1], np.float64)).to(device)
        # The validation loss encodes its truth as the training targets do (_fit_and_prepare).
        self.x_val = _float32_tensor(validation[0]).to(device)
        self.y_val_encoded = _encoded_truth_by_chunks(*validation, bending[1]).to(device)
        # The fused kernel does the whole update in one pass, a large part of a small model's step.
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        self.steps_per_epoch = max(1, math.ceil(len(self.t_train) / config.batch_size))
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.best_state = _copy_state(model)
        self.stale_epochs = 0
        self.plateau_scale = 1.0
        self.status, self.reason = "", ""  # set when the run has ended
        # (N, 4, 5) training-split Jacobians, kept only when the loss uses them
        self.jacobians: torch.Tensor | None = None
        if config.jacobian_weight:
            self.jacobians = _float32_tensor(jacobians).to(device)

    def _fit_and_prepare(self, split, bending=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's inputs (as given, float32), its extra features and its
        standardised targets, on the device.

        The network's features are the 7 inputs followed by the formulation's extra ones
        (physics inputs): only the extras are stored, beside the caller's inputs, and joined per
        batch, so a run holds the training data about twice (inputs and targets as loaded, plus
        extras and targets), never a float64 copy. Computed chunk by chunk; the standardisation
        is fitted on the same pass (Chan's merge of per-chunk moments).

        The truth the targets are encoded from is the straight line from the float32 inputs the
        network sees plus the bending (``bending``, or the given truth's), so that the rounding
        of the inputs and of the end positions to float32 does not enter the targets: the
        target scaling would amplify it on short legs of stiff tracks far beyond the residuals
        (docs/models.md, "Target precision").
        """
        inputs, truth = split
        n = len(inputs)
        self.x_inputs = _float32_tensor(inputs).to(self.device)
        n_extra = self.model_config.n_features - N_INPUTS
        extras = torch.empty(n, n_extra, dtype=torch.float32)
        targets = torch.empty(n, 4, dtype=torch.float32)
        moments = (ColumnMoments(), ColumnMoments())
        with torch.no_grad():
            for lo, x, y in _encoding_chunks(inputs, truth, bending):
                x, y = x.to(self.device), y.to(self.device)
                f, t = self.model.encode(x, y)
                moments[0].add(f)
                moments[1].add(t)
                extras[lo : lo + len(f)] = f[:, N_INPUTS:].float().cpu()
                targets[lo : lo + len(t)] = t.float().cpu()
        norm = standardisation(Normalisation.from_moments(*moments), targets, self.config.loss)
        self.model.set_normalisation(norm)
        targets -= torch.as_tensor(norm.target_mean, dtype=torch.float32)
        targets /= torch.as_tensor(norm.target_std, dtype=torch.float32)
        return extras.to(self.device), targets.to(self.device)

    def loss(self, predicted: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        """The training loss of standardised outputs (``TrainConfig.loss``), a mean."""
        return training_loss(predicted, wanted, self.config.loss)

    def _features(self, rows: torch.Tensor) -> torch.Tensor:
        """The network's (B, F) features of the training tracks ``rows``."""
        if not self.x_extra.shape[1]:
            return self.x_inputs[rows]
        return torch.cat((self.x_inputs[rows], self.x_extra[rows]), dim=1)

    # -- schedule ---------------------------------------------------------------------------
    def progress(self) -> float:
        """How far the cosine schedule is, 0 to 1: by steps, or by the clock with a time budget."""
        warmup = self.config.warmup_epochs * self.steps_per_epoch
        total = self.config.epochs * self.steps_per_epoch
        done = (self.step - warmup) / max(1.0, total - warmup)
        if self.config.time_budget:
            done = max(done, self.elapsed / self.config.time_budget)
        return min(1.0, max(0.0, done))

    def learning_rate(self) -> float:
        c = self.config
        warmup = c.warmup_epochs * self.steps_per_epoch
        if self.step < warmup:
            return c.lr * (self.step + 1) / warmup
        if c.schedule == "plateau":
            return c.lr * self.plateau_scale
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * cosine)

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self) -> float:
        self.model.train()
        order = torch.randperm(len(self.t_train), generator=self.generator).to(self.device)
        total = torch.zeros((), device=self.device)
        autocast = self.config.precision == "bf16" and self.device.type == "cuda"
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            x, t = self._features(rows), self.t_train[rows]
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                if self.jacobians is None:
                    loss = self.loss(self.model.standardised(x).float(), t)
                else:
                    loss = self._sobolev_loss(rows, t)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip, foreach=True)
            self.optimizer.step()
            total += loss.detach() * len(x)
            self.step += 1
        return float(total) / len(order)

    def _sobolev_loss(self, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The position loss plus ``jacobian_weight`` times the mean square relative error of
        the propagated uncertainties (see standardised_with_jacobian_error). The formulation's
        tangents are recomputed per batch: storing them would take 110 floats a track."""
        out, mismatch = standardised_with_jacobian_error(
            self.model, self.x_inputs[rows], self.jacobians[rows]
        )
        position = self.loss(out.float(), targets)
        return position + self.config.jacobian_weight * mismatch.float().pow(2).mean()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        predicted, losses = [], []
        chunk = PREPARE_CHUNK // 2  # bounds the formulation's float64 temporaries
        pairs = zip(self.x_val.split(chunk), self.y_val_encoded.split(chunk), strict=True)
        for x, y in pairs:
            features, base, scale = self.model.prepare(x)
            out = self.model.standardised(features)
            encoded = self.model.formulation.encode(base, scale, y)
            wanted = (encoded - self.model.target_mean.double()) / self.model.target_std.double()
            losses.append(self.loss(out.double(), wanted) * wanted.numel())
            predicted.append(self.model.decode(base, scale, out))
        predicted = torch.cat(predicted)
        loss = float(sum(losses)) / max(1, self.y_val.numel())
        dpos = position_errors(predicted, self.y_val)
        dslope = slope_errors(predicted, self.y_val)
        finite = bool(torch.isfinite(predicted).all())
        if not finite:
            nan = math.nan
            return dict.fromkeys(VALIDATION_METRICS, nan)
        return {
            "val_loss": loss,
            "val_pos_mean_mm": float(dpos.mean()),
            "val_pos_p95_mm": float(torch.quantile(dpos.float(), 0.95)),
            "val_pos_p99_mm": float(torch.quantile(dpos.float(), 0.99)),
            "val_pos_max_mm": float(dpos.max()),
            "val_slope_mean": float(dslope.mean()),
            "val_slope_p95": float(torch.quantile(dslope.float(), 0.95)),
        }

    # -- the run ------------------------------------------------------------------------------
    def run(self, ckpt_path: Path | None, callback: EpochCallback | None) -> TrainResult:
        if not self.status:  # a run restored after it ended is not trained further
            self.status, self.reason = self._epochs(ckpt_path, callback)
            if ckpt_path and self.status != "failed":
                save_checkpoint(ckpt_path, self.state())
        self.model.load_state_dict(self.best_state)
        return TrainResult(
            status=self.status,
            model=self.model,
            history=self.history,
            best=self.best,
            reason=self.reason,
            epochs_run=self.epoch,
        )

    def _epochs(self, ckpt_path: Path | None, callback: EpochCallback | None) -> tuple[str, str]:
        status, reason = "finished", ""
        while self.epoch < self.config.epochs:
            started = time.perf_counter()
            train_loss = self.train_epoch()
            train_seconds = time.perf_counter() - started
            metrics = {"epoch": self.epoch + 1, "train_loss": train_loss, **self.validate()}
            self.elapsed += time.perf_counter() - started
            self.epoch += 1
            metrics.update(
                lr=self.learning_rate(),
                seconds=self.elapsed,
                samples_per_s=self.epoch * len(self.t_train) / self.elapsed,
                # the training loop alone, without validation: what bench train compares
                train_samples_per_s=len(self.t_train) / train_seconds,
            )
            if not all(math.isfinite(metrics[k]) for k in ("train_loss", "val_loss")):
                status, reason = "failed", f"non-finite loss at epoch {self.epoch}"
                metrics["failed"] = 1.0
                self.history.append(metrics)
                if callback:
                    callback(metrics, None)
                break
            self._track_best(metrics)
            # .get: the best epoch of a checkpoint written before val_pos_max_mm was kept
            metrics.update({f"best_{k}": self.best.get(k, math.nan) for k in VALIDATION_METRICS})
            metrics["best_epoch"] = self.best["epoch"]
            self.history.append(metrics)
            ending = self._ending()
            if ckpt_path:
                save_checkpoint(ckpt_path, self.state())
            if callback:
                # The last epoch says so (train_status): a Tune trial then reports it as its last
                # result, instead of repeating it once training has returned.
                callback({**metrics, "train_status": ending[0]} if ending else metrics, ckpt_path)
            if ending:
                status, reason = ending
                break
        return status, reason

    def _ending(self) -> tuple[str, str] | None:
        """(status, reason) when the epoch just done is the last one, else None."""
        if self.stale_epochs >= self.config.patience:
            return "early_stopped", f"no better {BEST_METRIC} for {self.stale_epochs} epochs"
        if self.config.time_budget and self.elapsed >= self.config.time_budget:
            return "time_budget", f"{self.elapsed:.0f} s of {self.config.time_budget} s"
        if self.epoch >= self.config.epochs:
            return "finished", ""
        return None

    def _track_best(self, metrics: dict[str, float]) -> None:
        if not self.best or metrics[BEST_METRIC] < self.best[BEST_METRIC]:
            self.best = dict(metrics)
            self.best_state = _copy_state(self.model)
            self.stale_epochs = 0
            return
        # At a high learning rate the validation figures are noisy: with the cosine schedule,
        # early stopping watches only its second half, when the rate has come down.
        if self.config.schedule == "cosine" and self.progress() < 0.5:
            return
        self.stale_epochs += 1
        if (
            self.config.schedule == "plateau"
            and self.stale_epochs % max(1, self.config.patience // 4) == 0
        ):
            self.plateau_scale = max(self.config.min_lr_ratio, self.plateau_scale * 0.5)

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "model_state": _copy_state(self.model),
            "best_state": self.best_state,
            "optimizer_state": self.optimizer.state_dict(),
            "generator_state": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "history": self.history,
            "best": self.best,
            "stale_epochs": self.stale_epochs,
            "plateau_scale": self.plateau_scale,
            "status": self.status,
            "reason": self.reason,
        }

    def restore(self, state: dict[str, Any]) -> None:
        check_checkpoint_format(state)
        if state["model_config"] != self.model_config.to_dict():
            raise ValueError("checkpoint was made for another model configuration")
        self.model.load_state_dict(state["model_state"])
        self.best_state = state["best_state"]
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.generator.set_state(state["generator_state"])
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed"]
        self.history, self.best = state["history"], state["best"]
        self.stale_epochs, self.plateau_scale = state["stale_epochs"], state["plateau_scale"]
        self.status, self.reason = state["status"], state["reason"]


def _float32_tensor(array) -> torch.Tensor:
    """A float32 tensor of ``array``, sharing its memory when it already is float32."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
