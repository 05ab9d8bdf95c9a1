"""The lesson's own Keras pipeline on an MNIST image folder: the anchor cnnlab's speed is compared to.

Runs inside a throwaway virtual environment with TensorFlow (``bench/bench_mnist_whole.py`` makes
it; TensorFlow is not a cnnlab dependency). The model and training are the lesson's, exactly:
Conv32-Pool-Conv64-Pool-Flatten-Dense128-Dropout0.5-Dense10, Adam 1e-3, batch 128, up to 15 epochs,
the last 10,000 training images as validation, EarlyStopping on val_loss (patience 5, best weights
restored) and ReduceLROnPlateau (x0.5, patience 3, min 1e-7). After every epoch a callback scores
the test set; its time is excluded, so "seconds to 99%" is training time from the first epoch's
start, which favours Keras (data loading and model building are not counted).

    python keras_lesson.py MNIST_FOLDER OUT.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402


def load_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All PNGs of ``folder/<digit>/`` as (N, 28, 28, 1) floats in [0, 1] and integer labels."""
    images, labels = [], []
    for label in range(10):
        for path in sorted((folder / str(label)).iterdir()):
            images.append(np.asarray(Image.open(path).convert("L"), dtype=np.uint8))
            labels.append(label)
    x = np.stack(images).astype("float32")[..., None] / 255.0
    return x, np.asarray(labels)


class TestEveryEpoch(keras.callbacks.Callback):
    """Test accuracy after each epoch, with the seconds of training so far (its own time excluded)."""

    def __init__(self, x_test: np.ndarray, y_test: np.ndarray, stop_at: float | None = None) -> None:
        super().__init__()
        self.x_test, self.y_test, self.stop_at = x_test, y_test, stop_at
        self.trained = 0.0
        self.rows: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.trained += time.perf_counter() - self._start
        _, accuracy = self.model.evaluate(self.x_test, self.y_test, batch_size=512, verbose=0)
        self.rows.append(
            {
                "epoch": epoch + 1,
                "seconds": round(self.trained, 2),
                "test_acc": float(accuracy),
                "val_acc": float((logs or {}).get("val_accuracy", 0.0)),
            }
        )
        print(f"epoch {epoch + 1}: {self.trained:.1f} s of training, test accuracy {accuracy:.4f}", flush=True)
        if self.stop_at is not None and accuracy >= self.stop_at:
            self.model.stop_training = True  # the time to it is all the benchmark needs


def main(folder: Path, out: Path, stop_at: float | None = None) -> None:
    started = time.perf_counter()
    x_train, y_train = load_split(folder / "train")
    x_test, y_test = load_split(folder / "test")
    order = np.random.default_rng(0).permutation(len(x_train))  # Keras' MNIST comes shuffled; folders are by class
    x_train, y_train = x_train[order], y_train[order]
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    x_val, y_val = x_train[-10000:], y_train[-10000:]
    x_train, y_train = x_train[:-10000], y_train[:-10000]
    loaded = time.perf_counter() - started
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    probe = TestEveryEpoch(x_test, y_test, stop_at)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-7),
        probe,
    ]
    model.fit(
        x_train, y_train, batch_size=128, epochs=15, validation_data=(x_val, y_val), callbacks=callbacks, verbose=0
    )
    reached = next((row["seconds"] for row in probe.rows if row["test_acc"] >= 0.99), None)
    result = {
        "tensorflow": tf.__version__,
        "threads": os.cpu_count(),
        "load_seconds": round(loaded, 1),
        "epochs": probe.rows,
        "seconds_to_99": reached,
        "final_test_acc": float(model.evaluate(x_test, y_test, verbose=0)[1]),
    }
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}))


if __name__ == "__main__":
    # python keras_lesson.py MNIST_FOLDER OUT.json [STOP_AT]: STOP_AT (e.g. 0.99) ends training once reached
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else None)
