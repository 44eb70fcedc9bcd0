"""Stand-in for `hpo worker STUDY --trials N` until the real command exists.

Same contract as the real worker, so the compose stack can be exercised now:
join or create STUDY on the RDB storage (HPO_STORAGE), run trials until the
study has N finished (complete or pruned) trials in total, exit 0. Each trial
trains a tiny Keras CNN on random 8x8 images for one epoch, which checks that
TensorFlow works inside the image. The trial records the container's hostname
so a run shows which worker did what.

Used by scripts/compose.standin.yml (HPO_STANDIN=1 scripts/compose_up_podman.sh).
"""

from __future__ import annotations

import argparse
import os
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--storage", default=os.environ.get("HPO_STORAGE"))
    args = parser.parse_args()

    import keras
    import numpy as np
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    host = socket.gethostname()
    study = optuna.create_study(
        storage=args.storage, study_name=args.study, direction="maximize", load_if_exists=True
    )
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", host)
        filters = trial.suggest_int("filters", 4, 16)
        lr = trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        rng = np.random.default_rng(trial.number)
        x = rng.random((256, 8, 8, 1), dtype=np.float32)
        y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(filters, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        hist = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        return float(hist.history["accuracy"][-1])

    t0 = time.monotonic()
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done < args.trials:
        study.optimize(objective, callbacks=[MaxTrialsCallback(args.trials, states=finished)])
    done = len(study.get_trials(deepcopy=False, states=finished))
    print(f"{host}: study {args.study!r} has {done} finished trials ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
