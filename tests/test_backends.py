"""The trial path is backend-agnostic Keras 3: it runs on JAX with TensorFlow unimportable,
as on the GPU machines that have JAX or PyTorch and no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import cli_env

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


def test_a_study_runs_on_jax_without_tensorflow(tmp_path: Path) -> None:
    import jax  # noqa: F401 - part of the test extras; a missing JAX must fail, not skip

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
    assert "backend jax" in proc.stderr
    trials = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'j.db'}").trials
    assert len(trials) == 2
    for trial in trials:  # trained on JAX: the score is the best epoch's validation accuracy
        assert trial.value == max(trial.user_attrs["history"]["val_accuracy"])
