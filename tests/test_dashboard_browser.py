"""The dashboard in a real headless Chromium: a study made by `hpo run` (the session's
`searched` fixture), served by
`hpo dashboard`, lists its trials, and each trial's learning curve is served as a PNG and
shown in the trial's artifact panel. Screenshots go to the test's tmp folder and to
bench/results/screenshots/ for a human to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest

from tests.conftest import trial_artifacts
from tests.viz_helpers import PNG_MAGIC, SCREENSHOTS, browser_page, dashboard

pytestmark = pytest.mark.slow


def test_dashboard_shows_trials_and_their_learning_curves(searched: Path, tmp_path: Path) -> None:
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{searched / 'v.db'}")
    trial = study.trials[0]
    meta = trial_artifacts(trial)[f"learning-curve-trial-{trial.number}.png"]
    artifact_path = f"/artifacts/{study._study_id}/{trial._trial_id}/{meta['artifact_id']}"
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with (
        dashboard(searched, "--storage", "sqlite:///v.db", "--artifacts", "art") as (port, _),
        browser_page(tmp_path / "chromium-profile") as page,
    ):
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/dashboard/")
        page.get_by_text("demo", exact=False).first.wait_for()
        page.screenshot(path=shots / "1-studies.png")

        page.goto(f"{base}/dashboard/studies/{study._study_id}")
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(2000)  # plotly animates the first drawing
        page.screenshot(path=shots / "2-study-history.png")

        page.goto(f"{base}/dashboard/studies/{study._study_id}/trials")
        page.get_by_text("2 Trials").wait_for()
        for number in (0, 1):
            assert page.get_by_text(f"Trial {number}", exact=True).count() >= 1
        image = page.locator(f"img[alt='{meta['filename']}']")
        image.wait_for()
        assert image.get_attribute("src").endswith(artifact_path)
        image.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1000, 400]
        page.screenshot(path=shots / "3-trial-artifact-panel.png")

        response = page.request.get(f"{base}{artifact_path}")
        assert response.status == 200
        assert response.headers["content-type"] == "image/png"
        assert response.body()[:8] == PNG_MAGIC
        page.goto(f"{base}{artifact_path}")
        page.screenshot(path=shots / "4-learning-curve-artifact.png")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for shot in sorted(shots.iterdir()):
        assert shot.stat().st_size > 10_000, f"{shot.name} looks blank"
        shutil.copy(shot, SCREENSHOTS / shot.name)
