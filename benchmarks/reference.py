"""The seed tutorial's way of training, reproduced as the baseline every ratio is taken against.

As in "Convolutional Neural Network in Keras": all images copied to float32 and scaled to [0, 1],
labels one-hot encoded, a ``Sequential`` copy of the CNN (276,138 parameters, float inputs) and
``model.fit`` on the in-memory arrays with categorical cross-entropy. Hyperparameters are the
reference configuration's (RMSprop, learning rate 0.001, batch 256). Epoch timing matches the
train stage's (epoch begin to epoch end, validation included); with ``--eval-test`` the test
split is scored after each epoch, outside that timing.

    python -m benchmarks.reference --prepared-dir D --epochs 2 --out reference.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

STARTED = time.perf_counter()

from benchmarks.common import write_json  # noqa: E402

PARAMS = 276_138


def build_tutorial_model():  # type: ignore[no-untyped-def]
    """The tutorial's CNN, layer for layer, taking float32 images in [0, 1]."""
    from keras import Input, Sequential, layers

    return Sequential(
        [
            Input((32, 32, 3)),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-test", action="store_true", help="score the test split per epoch")
    parser.add_argument("--stop-at", type=float, help="stop once test accuracy reaches this")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    keras.utils.set_random_seed(args.seed)
    # The tutorial's preprocessing: float32 copies of every split, one-hot labels.
    arrays = {}
    for split in ("train", "val", "test"):
        with np.load(args.prepared_dir / f"{split}.npz") as data:
            x = data["x"].astype("float32") / 255.0
            y = keras.utils.to_categorical(data["y"], 10)
        arrays[split] = (x, y)
    model = build_tutorial_model()
    assert model.count_params() == PARAMS, model.count_params()
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=0.001),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    n_train = len(arrays["train"][0])
    result: dict = {"way": "reference", "n_train": n_train, "params": PARAMS, "epochs": []}

    class Timed(keras.callbacks.Callback):
        """The train stage's epoch timing, then (untimed) the test score."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds = time.perf_counter() - self.started
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            row.update(seconds=seconds, images_per_s=n_train / seconds)
            if args.eval_test:
                x, y = arrays["test"]
                _, row["test_accuracy"] = self.model.evaluate(x, y, batch_size=1024, verbose=0)
            result["epochs"].append(row)
            result["startup_s"] = fit_started - STARTED
            write_json(args.out, result)
            if args.stop_at and row.get("test_accuracy", 0.0) >= args.stop_at:
                self.model.stop_training = True

    fit_started = time.perf_counter()
    model.fit(
        *arrays["train"],
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=arrays["val"],
        shuffle=True,
        callbacks=[Timed()],
        verbose=2,
    )
    result["complete"] = True
    write_json(args.out, result)


if __name__ == "__main__":
    main()
