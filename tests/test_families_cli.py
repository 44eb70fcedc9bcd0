"""Each model family end to end through the real CLI on real images: a search pinned to the
family, `hpo export-best --tta`, `hpo predict --tta` and `hpo explain` on its bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke_cli, small_space

pytestmark = pytest.mark.slow


@pytest.mark.timeout(6000)  # a trial and a retraining on 3,000 real images, on a busy 2-core box
@pytest.mark.parametrize("family", ["plain", "residual", "separable"])
def test_search_export_predict_explain_each_family(
    family: str, tmp_path: Path, catsdogs_dir: Path
) -> None:
    invoke_cli(
        "run",
        "catsdogs",
        "--data-dir",
        str(catsdogs_dir),
        "--space",
        # the shipped catsdogs space, small, with the family fixed
        str(
            small_space(
                tmp_path,
                "catsdogs",
                block=f'"{family}"',
                conv_blocks="2",
                filters="8",
                dense_units="16",
            )
        ),
        "--trials",
        "1",  # what is checked is the family's path from search to bundle, not the search
        "--epochs",
        "2",
        "--image-size",
        "16",
        "--storage",
        "sqlite:///t.db",
        cwd=tmp_path,
    )
    proc = invoke_cli(  # in this process: the export trains here, not in a child
        "export-best",
        "catsdogs",
        "--data-dir",
        str(catsdogs_dir),
        "--tta",
        "--storage",
        "sqlite:///t.db",
        cwd=tmp_path,
    )
    bundle = Path(proc.stdout.strip())
    params = json.loads((bundle / "params.json").read_text())
    assert params["block"] == family and params["conv_blocks"] == 2
    assert {"growth", "lr_schedule", "label_smoothing", "weight_decay", "dense_units"} <= set(
        params
    )
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["schedule_epochs"] == 2 and "mirror" in metrics["tta"]["method"]
    # plain and flip-averaged numbers are each their own test confusion matrix's: correct / all
    for numbers in (metrics, metrics["tta"]):
        matrix = np.asarray(numbers["test_confusion_matrix"])
        assert matrix.sum() == metrics["test_images"] == 1000
        assert numbers["test_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert "with flip averaging (--tta)" in proc.stderr
    card = (bundle / "model_card.md").read_text()
    assert f"family: `{family}` blocks, widths" in card and "with test-time flip averaging" in card

    image = catsdogs_dir / "test" / "dogs" / "dog.1500.jpg"
    plain = invoke_cli("predict", str(bundle), str(image), "--top", "2", "--json", cwd=tmp_path)
    tta = invoke_cli(
        "predict", str(bundle), str(image), "--top", "2", "--json", "--tta", cwd=tmp_path
    )
    for proc in (plain, tta):
        [result] = json.loads(proc.stdout)
        assert {t["label"] for t in result["top"]} == {"cat", "dog"}
        assert sum(t["probability"] for t in result["top"]) == pytest.approx(1, abs=1e-3)

    proc = invoke_cli("explain", str(bundle), str(image), "--out", "ex", cwd=tmp_path)
    assert "block1_act 16x16x" in proc.stdout and "block2_act 8x8x" in proc.stdout
    assert (tmp_path / "ex" / "dog.1500-feature-maps.png").stat().st_size > 0
    assert (tmp_path / "ex" / "filters.png").stat().st_size > 0
