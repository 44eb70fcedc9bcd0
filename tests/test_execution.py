"""How trials run: the device feed (drawn on the device through JAX here, on CPU), precision
settings and their record, the GPU memory share of a worker, the GPU wheelhouse script.
A whole study on the device feed, as the CLI reports it: tests/test_backends.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpo.data import load_dataset
from hpo.errors import HpoError
from hpo.space import load_space, load_space_text
from hpo.study.record import StudyRecord, check_or_record
from tests.conftest import REPO, cli_env, invoke_cli

# Runs under KERAS_BACKEND=jax: every batch of the device feed against the host feed's.
SAME_BATCHES = r"""
import json, keras, numpy as np
from hpo.data import Split
from hpo.feed import Batches, DeviceBatches
assert keras.backend.backend() == "jax"
rng = np.random.default_rng(1)
images = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
labels = rng.integers(0, 3, 50)
rows = np.array([41, 3, 17, 8, 29, 30, 2, 44, 12, 5, 36, 21, 9, 48, 0, 33, 25])  # unsorted, gaps
checked = 0
for binary in (True, False):
    for shuffle in (True, False):
        host = Batches(Split(images, labels, rows), 4, binary=binary, shuffle=shuffle, seed=7)
        device = DeviceBatches(Split(images, labels, rows), 4, binary=binary, shuffle=shuffle, seed=7)
        assert len(host) == len(device) == 5
        for epoch in range(3):
            seen = []
            for i in range(len(host)):
                (hx, hy), (dx, dy) = host[i], device[i]
                assert type(dx).__module__.startswith("jax"), type(dx)  # drawn on the device
                assert str(keras.ops.dtype(dx)) == "uint8"
                np.testing.assert_array_equal(np.asarray(dx).astype("float32"), hx)
                np.testing.assert_array_equal(np.asarray(dy), hy)
                assert np.asarray(dy).dtype == hy.dtype and np.asarray(dy).shape == hy.shape
                seen.append(hx)
                checked += 1
            assert sorted(np.concatenate(seen).reshape(len(rows), -1)[:, 0]) == sorted(
                images[rows].reshape(len(rows), -1)[:, 0])  # every row once per epoch
            host.on_epoch_end(); device.on_epoch_end()
print(json.dumps({"batches": checked}))
"""

# Runs under KERAS_BACKEND=jax: one real fit through the device feed in mixed bfloat16 (one
# conv block: XLA compiles the steps on CPU, ~7 s less than with two).
MIXED_FIT = r"""
import json, keras, numpy as np
from hpo.data import Split
from hpo.execution import Execution
from hpo.training import train
rng = np.random.default_rng(0)
labels = rng.integers(0, 2, 64)
images = np.where(labels[:, None, None, None] == 1, 190, 60).astype(np.uint8).repeat(16, 1).repeat(16, 2).repeat(3, 3)
params = dict(learning_rate=3e-3, batch_size=16, l2=1e-5, dropout=0.1, conv_blocks=1,
              activation="relu", filters=8, optimizer="adam")
result = train(params, Split(images, labels, np.arange(48)), num_classes=2, epochs=2,
               val_split=Split(images, labels, np.arange(48, 64)), augment=False,
               execution=Execution("device", "mixed_bfloat16", 4))
model = result.model
print(json.dumps({
    "conv": model.get_layer("block1_conv").compute_dtype,
    "conv_weights": model.get_layer("block1_conv").kernel.dtype,
    "head": model.get_layer("head").compute_dtype,
    "output": str(model.predict_on_batch(images[:2].astype("float32")).dtype),
    "global_after": keras.config.dtype_policy().name,
    "steps_per_execution": model.steps_per_execution,
    "epochs": result.epochs_run, "loss": result.history["loss"]}))
"""


def run_jax(code: str) -> dict:
    import jax  # noqa: F401 - in the test extras; missing JAX must fail, not skip

    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(KERAS_BACKEND="jax"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_device_feed_draws_the_host_feeds_batches_on_jax() -> None:
    assert run_jax(SAME_BATCHES) == {"batches": 2 * 2 * 3 * 5}


@pytest.mark.slow
def test_mixed_bfloat16_keeps_the_head_and_weights_float32() -> None:
    out = run_jax(MIXED_FIT)
    assert out["conv"] == "bfloat16" and out["conv_weights"] == "float32"
    assert out["head"] == "float32" and out["output"] == "float32"
    assert out["global_after"] == "float32"  # the caller's next model is unaffected
    assert out["steps_per_execution"] == 3 and out["epochs"] == 2  # 48 rows / 16: at most 3
    assert all(loss == loss for loss in out["loss"])  # finite, not NaN


def test_precision_and_feed_are_validated_and_kept_out_of_the_space_hash(tmp_path: Path) -> None:
    base = (REPO / "search_spaces" / "demo.toml").read_text()
    for key, bad in (("precision", "bfloat16"), ("feed", "gpu")):
        with pytest.raises(HpoError, match=rf"train\.{key} must be one of"):
            load_space_text(
                base.replace("[train]", f'[train]\n{key} = "{bad}"'), tmp_path / "x.toml"
            )
    space = load_space_text(
        base.replace("[train]", '[train]\nprecision = "mixed_float16"'), tmp_path / "x.toml"
    )
    assert space.train["precision"] == "mixed_float16" and space.train["feed"] == "auto"
    # a study made before these keys existed keeps its hash, so it still resumes
    demo = load_space("demo")
    before = {k: v for k, v in demo.train.items() if k in ("epochs", "image_size", "augment")}
    import hashlib

    old = hashlib.sha256(
        repr((demo.source, sorted(before.items()), sorted(demo.split.items()))).encode()
    ).hexdigest()[:16]
    assert demo.content_hash == old


def test_device_feed_is_refused_where_keras_copies_batches_through_the_host() -> None:
    import keras

    from hpo.execution import plan_execution

    assert keras.backend.backend() == "tensorflow"  # the test session's backend
    with pytest.raises(HpoError, match='feed = "device" needs the jax or torch backend'):
        plan_execution({"feed": "device"}, 1000)
    plan = plan_execution({}, 1000)  # CPU: today's feed, float32
    assert (plan.feed, plan.precision, plan.steps_per_execution) == ("host", "float32", 1)


# nvidia-smi --query-gpu=index,name,compute_cap,memory.total --format=csv,noheader,nounits
SMI = """0, NVIDIA H100 80GB HBM3, 9.0, 81559
1, Tesla V100-SXM2-16GB, 7.0, 16384
"""


def test_gpu_query_precision_and_feed_rules() -> None:
    from hpo.device import parse_gpu_query
    from hpo.execution import choose_feed, choose_precision

    h100, v100 = parse_gpu_query(SMI)
    assert (h100.compute_capability, h100.memory_bytes) == (9.0, 81559 * 2**20)
    assert parse_gpu_query(SMI, visible="1") == (v100,)
    assert parse_gpu_query(SMI, visible="") == ()

    assert choose_precision("auto", [h100]) == "mixed_bfloat16"
    assert choose_precision("auto", [h100, v100]) == "float32"  # V100 has no native bf16
    assert choose_precision("auto", []) == "float32"  # CPU
    assert choose_precision("mixed_float16", []) == "mixed_float16"

    gib, h100_bytes = 2**30, h100.memory_bytes
    assert choose_feed("auto", "jax", h100_bytes, 3 * gib)[0] == "device"  # Animals-10, 128 px
    assert choose_feed("auto", "torch", int(0.3 * h100_bytes), 3 * gib)[0] == "device"
    feed, why = choose_feed("auto", "jax", int(0.1 * h100_bytes), 3 * gib)
    assert feed == "host" and "exceed" in why  # a tenth of the GPU: the rows do not fit
    assert choose_feed("auto", "tensorflow", h100_bytes, gib)[0] == "host"
    assert choose_feed("auto", "jax", 0, gib) == ("host", "no GPU")
    assert choose_feed("device", "jax", 0, gib)[0] == "device"
    with pytest.raises(HpoError, match="needs the jax or torch backend"):
        choose_feed("device", "tensorflow", h100_bytes, gib)


def test_the_study_records_its_precision_and_refuses_another(tmp_path: Path) -> None:
    data = load_dataset("demo", None, 16, 0)
    space = load_space("demo").with_overrides(image_size=16)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p")
    check_or_record(study, StudyRecord.of(data, space, precision="float32"), data, space)
    assert study.user_attrs["hpo:precision"] == "float32"
    with pytest.raises(HpoError, match=r"different precision .*float32 there, mixed_bfloat16 now"):
        check_or_record(study, StudyRecord.of(data, space, precision="mixed_bfloat16"), data, space)
    # a study recorded before precision was: its trials trained in float32
    old = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="old")
    for key, value in StudyRecord.of(data, space).attrs().items():
        if key != "hpo:precision":
            old.set_user_attr(key, value)
    check_or_record(old, StudyRecord.of(data, space, precision="float32"), data, space)
    with pytest.raises(HpoError, match="different precision"):
        check_or_record(old, StudyRecord.of(data, space, precision="mixed_float16"), data, space)


# Stops the real CLI at its first `import keras` and prints what the backend would see then.
AT_BACKEND_LOAD = """
import json, os, sys
class AtKeras:
    def find_spec(self, name, path=None, target=None):
        if name == "keras":
            keys = ("HPO_GPU_MEMORY_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
            print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)
            os._exit(0)
sys.meta_path.insert(0, AtKeras())
sys.argv[0] = "hpo"
from hpo.cli import main
main()
"""


def test_gpu_memory_fraction_is_set_before_the_backend_loads(tmp_path: Path) -> None:
    # in-process trials: the sentinel below ends the process that imports Keras
    args = [
        "run",
        "demo",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--storage",
        "sqlite:///m.db",
        "--trials-per-process",
        "0",
    ]
    env = {
        k: v
        for k, v in cli_env(KERAS_BACKEND="jax").items()
        if k not in ("HPO_GPU_MEMORY_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
    }

    def at_load(*extra: str, **more: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", AT_BACKEND_LOAD, *args, *extra],
            cwd=tmp_path,
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert at_load("--gpu-memory-fraction", "0.3") == {
        "HPO_GPU_MEMORY_FRACTION": "0.3",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3",
    }
    assert at_load(HPO_GPU_MEMORY_FRACTION="0.45")["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
    assert at_load() == {"HPO_GPU_MEMORY_FRACTION": None, "XLA_PYTHON_CLIENT_MEM_FRACTION": None}
    bad = invoke_cli(*args, "--gpu-memory-fraction", "1.5", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--gpu-memory-fraction" in bad.stderr
    # importing the library changes nothing in the caller's environment
    probe = (
        "import os, hpo, hpo.device, hpo.execution, hpo.cli.run; "
        "print(os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "None", out.stderr


def test_gpu_wheelhouse_plan_names_what_hpo_needs_and_no_backend() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-wheelhouse.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    wanted = proc.stdout.split()
    for name in (
        "keras",
        "optuna",
        "optuna-integration",
        "sqlalchemy",
        "alembic",
        "rich",
        "typer",
        "filelock",
        "pillow",
        "matplotlib",
        "psycopg[binary]",
    ):
        assert any(w.split("==")[0].split(">=")[0] == name for w in wanted), (name, wanted)
    assert not any(w.startswith(("tensorflow", "jax", "torch", "nvidia")) for w in wanted)


def test_activation_bytes_count_every_layers_output_in_its_compute_dtype() -> None:
    import keras

    from hpo.execution import activation_bytes, precision_scope

    def conv_net() -> keras.Model:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    # per image: the 8x8x3 input, the 8x8x4 convolution, 4 pooled values
    assert activation_bytes(conv_net(), 10) == 10 * 4 * (8 * 8 * 3 + 8 * 8 * 4 + 4)
    with precision_scope("mixed_bfloat16"):  # the layers' outputs in 2 bytes, the input in 4
        assert activation_bytes(conv_net(), 10) == 10 * (4 * 8 * 8 * 3 + 2 * (8 * 8 * 4 + 4))


def test_a_batch_too_big_for_the_gpu_share_fails_its_trial_before_training() -> None:
    """The estimate guards a GPU trial from compiling for minutes (XLA did, on an H100) and
    fails it as out of memory instead; the trial's own share is given, so it runs on CPU."""
    import numpy as np

    from hpo.data import Split
    from hpo.errors import OutOfMemory
    from hpo.execution import Execution, check_activations_fit
    from hpo.training import train

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 40)
    params = dict(learning_rate=1e-3, batch_size=64, l2=1e-5, dropout=0.1, conv_blocks=2,
                  activation="relu", filters=8, optimizer="adam")  # fmt: skip
    data = Split(images, labels, np.arange(40))

    execution = Execution("host", "float32", 1, "test", gpu_memory_bytes=2**20)
    with pytest.raises(OutOfMemory, match=r"^out of memory before training: a batch of 40 "):
        # 1 MiB: less than 40 images' activations (~2 MiB)
        train(params, data, num_classes=2, epochs=1, augment=False, execution=execution)

    from hpo.model import build_model

    model = build_model(params, 2, 16, augment=False)
    check_activations_fit(model, 40, 2**30)  # 1 GiB: room enough
    check_activations_fit(model, 10**6, 0)  # no GPU: no check
