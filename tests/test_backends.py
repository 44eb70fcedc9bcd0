"""The trial path is backend-agnostic Keras 3: it runs on JAX with TensorFlow unimportable,
as on the GPU machines that have JAX or PyTorch and no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow

# Inside the child, `import tensorflow` fails as if it were not installed; then the real CLI runs.
NO_TENSORFLOW = """
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTensorFlow())
sys.argv[0] = "hpo"
from hpo.cli import main
main()
"""


def test_a_study_runs_on_jax_without_tensorflow_and_each_trial_says_its_feed(
    tmp_path: Path,
) -> None:
    """The device feed (batches drawn on the device, which needs JAX or torch), asked for in
    the space: said once for the run and again on each trial's line, and recorded."""
    import jax  # noqa: F401 - part of the test extras; a missing JAX must fail, not skip

    space = (REPO / "search_spaces" / "demo.toml").read_text()
    (tmp_path / "device.toml").write_text(space.replace("[train]", '[train]\nfeed = "device"'))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TENSORFLOW,
            "run",
            "demo",
            "--trials",
            "2",
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--space",
            "device.toml",
            "--storage",
            "sqlite:///j.db",
        ],
        cwd=tmp_path,
        env=cli_env(KERAS_BACKEND="jax"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    log = " ".join(proc.stderr.split())  # rich wraps long lines at 80 columns in a pipe
    assert "backend jax" in log
    assert "trials: device feed, float32 (asked for in the space)" in log
    trial_line = log[log.index("trial 0 ") :].split(" val_acc ")[0]
    assert "(device feed, float32)" in trial_line  # said on the trial's own line
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'j.db'}")
    assert study.user_attrs["hpo:precision"] == "float32"
    assert len(study.trials) == 2
    for trial in study.trials:  # trained on JAX: the score is the best epoch's validation accuracy
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == max(trial.user_attrs["history"]["val_accuracy"])
        assert (trial.user_attrs["feed"], trial.user_attrs["precision"]) == ("device", "float32")
