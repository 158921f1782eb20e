"""Fit the model: compile from params, per-epoch bookkeeping, NaN guard, resume from a checkpoint.

Backend-neutral Keras; anything backend-specific comes from ``pipeline.train.backend``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.artifacts import prepared
from pipeline.artifacts.history import EpochRow
from pipeline.core import keras_backend
from pipeline.core.errors import PipelineError
from pipeline.core.params import ModelParams, TrainParams
from pipeline.train import backend
from pipeline.train.checkpoints import ResumeState, TrainingCheckpoint, load_best_weights
from pipeline.train.model import build_model
from pipeline.train.precision import cpu_bf16_flags, resolve_precision_policy

log = logging.getLogger("pipeline")

# Which epoch counts as "best" for train.restore_best.
BEST_MONITOR = "val_accuracy"


@dataclass
class PreparedData:
    """The training and validation splits written by the preprocess stage."""

    train: prepared.Split
    val: prepared.Split
    classes: list[str]
    files: list[Path]

    @property
    def train_x(self) -> np.ndarray:
        return self.train.x

    @property
    def train_y(self) -> np.ndarray:
        return self.train.y

    @property
    def val_x(self) -> np.ndarray:
        return self.val.x

    @property
    def val_y(self) -> np.ndarray:
        return self.val.y


def load_prepared(prepared_dir: Path) -> PreparedData:
    """Load the train and val splits and the class names, or say which stage to run first."""
    classes = prepared.read_classes(prepared_dir)
    train = prepared.read_split(prepared_dir, "train", len(classes))
    val = prepared.read_split(prepared_dir, "val", len(classes))
    files = [train.path, val.path, prepared.classes_path(prepared_dir)]
    return PreparedData(train, val, classes, files)


# Fraction of all steps spent warming the learning rate up, for lr_schedule: one_cycle.
ONE_CYCLE_WARMUP = 0.2


def precision_policy(setting: str) -> str:
    """:func:`resolve_precision_policy` for this machine."""
    return resolve_precision_policy(
        setting, bool(keras_backend.gpu_names()), cpu_bf16_flags(), keras_backend.name()
    )


def learning_rate(train_params: TrainParams, steps_per_epoch: int) -> float | object:
    """The optimizer's learning rate: a constant, or a schedule over all the training steps."""
    peak = train_params.learning_rate
    total = max(1, train_params.epochs * steps_per_epoch)
    if train_params.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total)
    if train_params.lr_schedule == "one_cycle":
        # Linear warm-up from peak/10, then cosine annealing to zero: the one-cycle shape.
        warmup = max(1, int(total * ONE_CYCLE_WARMUP))
        return keras.optimizers.schedules.CosineDecay(
            peak / 10, decay_steps=max(1, total - warmup), warmup_target=peak, warmup_steps=warmup
        )
    return peak


def new_model(
    model_params: ModelParams,
    train_params: TrainParams,
    steps_per_epoch: int = 1,
    train_x: np.ndarray | None = None,
) -> keras.Model:
    """Build and compile a fresh model from params (``steps_per_epoch`` sizes an LR schedule;
    ``train_x``, the training images, sets layers computed from the data)."""
    optimizers = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
    }
    # Only what is set: a default run builds the very optimizer and loss it always did.
    options: dict[str, object] = {}
    if train_params.momentum:
        options |= {"momentum": train_params.momentum, "nesterov": train_params.nesterov}
    if train_params.weight_decay:
        options["weight_decay"] = train_params.weight_decay
    # Padding images (train.pad_last_batch) carry weight 0: the loss averages over the weights
    # and accuracy is weighted. Without sample weights both are the plain mean, to the bit.
    weighted = train_params.pad_last_batch
    reduction = {"reduction": "mean_with_sample_weight"} if weighted else {}
    model = build_model(model_params, seed=train_params.seed, train_x=train_x)
    model.compile(
        optimizer=optimizers[train_params.optimizer](
            learning_rate=learning_rate(train_params, steps_per_epoch), **options
        ),
        loss=(
            SmoothedSparseCrossentropy(train_params.label_smoothing, **reduction)
            if train_params.label_smoothing
            # Same math as the reference's categorical cross-entropy, without one-hot copies.
            else keras.losses.SparseCategoricalCrossentropy(**reduction)
        ),
        **{"weighted_metrics" if weighted else "metrics": ["accuracy"]},
        steps_per_execution=backend.steps_per_execution(train_params.steps_per_execution),
    )
    return model


@keras.saving.register_keras_serializable(package="cifar10")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed targets: the true class gets
    ``1 - label_smoothing`` plus its even share of ``label_smoothing``, like Keras's
    ``CategoricalCrossentropy(label_smoothing=...)``, without one-hot labels in the input
    pipeline. Registered: a resumed checkpoint recompiles with it."""

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: object, y_pred: object) -> object:
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        targets = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return super().get_config() | {"label_smoothing": self.label_smoothing}


def describe_setup(model: keras.Model) -> str:
    """One line saying how ``model`` (compiled) will train: device, backend, precision, XLA."""
    placed = backend.model_devices(model)
    # Where the variables really live, when that is more than one device: proof of the split.
    on = f", variables on {' + '.join(placed)}" if len(placed) > 1 else ""
    return (
        f"training on {keras_backend.device_description()}{on}, "
        f"backend {keras_backend.name()} {keras_backend.version()}, "
        f"precision policy {keras.mixed_precision.global_policy().name}, "
        f"XLA/JIT {'on' if backend.jit_enabled(model) else 'off'}, "
        f"steps_per_execution {model.steps_per_execution}"
    )


class StopOnNaN(keras.callbacks.Callback):
    """Abort at the first non-finite loss: later epochs would only train garbage."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            # "by": with steps_per_execution > 1 Keras reports once per compiled call.
            raise PipelineError(
                f"training loss became {loss} by batch {batch + 1}: the model diverged; "
                "try a lower train.learning_rate"
            )


class EpochRecorder(keras.callbacks.Callback):
    """Time each epoch, keep the history rows, and hand each finished row to ``on_epoch``."""

    def __init__(
        self,
        n_train: int,
        history: list[EpochRow],
        on_epoch: Callable[[keras.Model, list[EpochRow]], None],
    ) -> None:
        super().__init__()
        self.n_train = n_train
        self.history = history
        self.on_epoch = on_epoch
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._started
        row: EpochRow = {"epoch": epoch + 1}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        row["seconds"] = seconds
        row["images_per_s"] = self.n_train / seconds
        self.history.append(row)
        self.on_epoch(self.model, self.history)


def fit(
    data: PreparedData,
    model_params: ModelParams,
    train_params: TrainParams,
    checkpoint: TrainingCheckpoint,
    run_id: str,
    resume: ResumeState | None,
    log_epoch: Callable[[EpochRow], None],
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, list[EpochRow]]:
    """Train for ``train.epochs`` epochs, resuming from ``resume`` when given.

    Each finished epoch is checkpointed and passed to ``log_epoch``. ``callbacks`` run after the
    epoch's timing is taken (the benchmarks score the test split there). Returns the model (the
    best epoch's weights when ``train.restore_best``) and one history row per epoch.
    """
    steps_per_epoch = math.ceil(len(data.train_x) / train_params.batch_size)
    with backend.distribution_scope():
        if resume is None:
            model = new_model(model_params, train_params, steps_per_epoch, data.train_x)
            history, best = [], None
        else:
            model = keras.saving.load_model(resume.model_path)
            history, best = list(resume.history), resume.best_score

    # The live progress bar on a terminal; else one line per epoch of our own (Keras's verbose=2
    # adds an "Epoch i/n" line before each).
    live_bar = sys.stdout.isatty()

    def on_epoch(model: keras.Model, rows: list[EpochRow]) -> None:
        nonlocal best
        score = rows[-1].get(BEST_MONITOR, float("-inf"))
        is_best = best is None or score > best
        best = score if is_best else best
        # Log before checkpointing: a kill in between then repeats an epoch rather than losing
        # its metrics from the MLflow run.
        log_epoch(rows[-1])
        if not live_bar:
            log.info("%s", describe_epoch(rows[-1], train_params.epochs))
        checkpoint.save(model, len(rows), run_id, rows, best, is_best)

    backend.compile_augmentation(model)
    log.info("%s", describe_setup(model))
    batch_size = train_params.batch_size
    pad_train, pad_val = (
        backend.pads_last_batch(model, len(split), batch_size, train_params.pad_last_batch)
        for split in (data.train_x, data.val_x)
    )
    if pad_train or pad_val:
        log.info("last batches padded to %d images (weight 0): one compiled shape", batch_size)
    initial_epoch = len(history)
    if initial_epoch:
        log.info("resuming after epoch %d of %d", initial_epoch, train_params.epochs)
    model.fit(
        **backend.fit_inputs(
            data.train_x,
            data.train_y,
            batch_size,
            shuffle=True,
            # A resumed run must not replay the first epoch's shuffle order.
            seed=train_params.seed + initial_epoch,
            pad=pad_train,
        ),
        validation_data=_validation_set(data, batch_size, pad_val),
        epochs=train_params.epochs,
        initial_epoch=initial_epoch,
        callbacks=[StopOnNaN(), EpochRecorder(len(data.train_x), history, on_epoch), *callbacks],
        verbose=1 if live_bar else 0,
    )
    if train_params.restore_best:
        state = checkpoint.load()
        if state is not None and state.best_path is not None:
            load_best_weights(model, state.best_path)
    return model, history


def describe_epoch(row: EpochRow, epochs: int) -> str:
    """One log line for a finished epoch, e.g.
    ``epoch 2/10: loss 1.52, accuracy 0.441, val_loss 1.61, val_accuracy 0.42 (31.2 s)``."""
    timing = {"epoch", "seconds", "images_per_s"}
    shown = ", ".join(f"{name} {value:.4g}" for name, value in row.items() if name not in timing)
    return f"epoch {int(row['epoch'])}/{epochs}: {shown} ({row.get('seconds', 0.0):.1f} s)"


def _validation_set(data: PreparedData, batch_size: int, pad: bool) -> object:
    inputs = backend.fit_inputs(data.val_x, data.val_y, batch_size, shuffle=False, seed=0, pad=pad)
    return inputs["x"] if "y" not in inputs else (inputs["x"], inputs["y"])
