"""``hpo bench``: search strategies against each other at one epoch budget, over seeds.

Each strategy runs once per search seed through :func:`hpo.study.run_study` on the same
data and the same split (split seed fixed, search seed varied), each as its own study
``bench-<dataset>-<strategy>-s<seed>`` in one storage, until the study has trained
``budget_epochs`` epochs. Every number the comparison needs is read back from the studies
(per-trial epochs, scores, times), so a killed bench resumes where it stopped: finished
studies are skipped by the budget rule, a half-finished one continues, and each winner's
test result is stored on its study once measured.

The honest number per strategy is the **test accuracy of its winner**: the best trial is
retrained on train+val and tested once with the export's code
(:func:`hpo.export.retrain_trial`); a strategy that merely overfits the validation split
shows up there. With ``ensemble`` set, each study is also exported as an ensemble at the same
total epochs (:mod:`hpo.bench_ensemble`), a column beside the winner's.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpo.bench_ensemble import (
    ENSEMBLE_ATTR,
    ensemble_goal,
    ensemble_summary,
    ensemble_test,
    goal_line,
    store_test_probs,
)
from hpo.ensemble import EnsembleRequest
from hpo.errors import HpoError
from hpo.head import loss_targets, single_sigmoid
from hpo.progress import Reporter, format_params
from hpo.storage import redact
from hpo.study.engines import TUNERS
from hpo.study.strategies import DEFAULT_STRATEGY, STRATEGIES
from hpo.trials import best_trials, epochs_trained

KERAS_TUNER = "kt-"  # kt-hyperband, kt-bayesian, kt-random: the keras-tuner engine's tuners
# What `hpo bench` compares unless --strategies says otherwise.
DEFAULT_BENCH_STRATEGIES = (
    DEFAULT_STRATEGY,
    "random",
    "tpe-median",
    "tpe-hyperband",
    "kt-hyperband",
)
WINNER_ATTR = "bench:winner_test"  # a study's winner, retrained and tested (set once)
GOAL_EPOCH_SHARE = 0.4  # the default must reach another strategy's median best this fast


@dataclass(frozen=True)
class BenchSpec:
    """What is benchmarked: one dataset, split and budget; strategies x search seeds."""

    dataset: str
    budget_epochs: int
    seeds: int
    image_size: int
    epochs: int
    strategies: tuple[str, ...] = DEFAULT_BENCH_STRATEGIES
    storage: str = "sqlite:///bench.db"  # the CLI's default: bench.db in the --out folder
    data_dir: str | None = None
    space: str | None = None
    split_seed: int = 0
    overhead: bool = True
    ensemble: str | None = None  # also export each study as an ensemble (hpo.bench_ensemble)


def bench_strategies() -> tuple[str, ...]:
    """Every name a bench can compare: the Optuna strategies and KerasTuner's tuners."""
    return (*STRATEGIES, *(KERAS_TUNER + tuner for tuner in TUNERS))


def check_strategies(names: Sequence[str]) -> tuple[str, ...]:
    """The strategies, in order, or a one-line error naming an unknown one."""
    unknown = [name for name in names if name not in bench_strategies()]
    if unknown or not names:
        raise HpoError(
            f"unknown strategy '{unknown[0] if unknown else ''}' "
            f"(valid: {', '.join(bench_strategies())})"
        )
    return tuple(dict.fromkeys(names))


class EngineArgs(TypedDict, total=False):
    """The :func:`hpo.study.run_study` keywords that choose how a strategy searches."""

    engine: str
    tuner: str
    strategy: str


def engine_args(name: str) -> EngineArgs:
    """How :func:`hpo.study.run_study` runs bench strategy ``name``."""
    if name.startswith(KERAS_TUNER):
        return {"engine": "keras-tuner", "tuner": name.removeprefix(KERAS_TUNER)}
    return {"engine": "optuna", "strategy": name}


def study_name(dataset: str, strategy: str, seed: int) -> str:
    """Bench studies sort together in the dashboard, by strategy then seed."""
    return f"bench-{dataset}-{strategy}-s{seed}"


class BenchReporter(Reporter):
    """One line per finished trial, prefixed with its study: a bench runs dozens of studies,
    and a log of them must stay readable (also when written to a file by nohup)."""

    progress_bars = False

    def __init__(self, console: Console) -> None:
        self.console, self.prefix = console, ""

    def message(self, text: str) -> None:
        self.console.print(f"{self.prefix}{text}")

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        seconds: float,
        best: float | None,
        note: str = "",
    ) -> None:
        if best is None and state == "COMPLETE" and value is None:  # a winner's retraining
            self.console.print(f"{self.prefix}trial {number} retrained {seconds:.0f}s")
            return
        outcome = f"val_acc {value:.3f}" if value is not None else state.lower()
        self.console.print(
            f"{self.prefix}trial {number} {outcome} {seconds:.0f}s "
            f"best {'-' if best is None else f'{best:.3f}'} {note}".rstrip()
        )

    def study_finished(self, study: optuna.Study, reason: str) -> None:
        self.console.print(f"{self.prefix}{reason}")


def run_bench(spec: BenchSpec, out: str | Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) every strategy x seed study, test each winner, measure hpo's overhead,
    and write ``bench.json``, ``bench.png`` and ``bench.txt`` to ``out``."""
    from hpo.study import load_study, run_study

    reporter = reporter or Reporter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    studies: dict[str, list[optuna.Study]] = {name: [] for name in spec.strategies}
    for seed in range(spec.seeds):  # seeds outside: a stopped bench has every strategy alike
        for strategy in spec.strategies:
            name = study_name(spec.dataset, strategy, seed)
            if isinstance(reporter, BenchReporter):
                reporter.prefix = escape(f"[{strategy} s{seed}] ")
            run_study(
                spec.dataset,
                n_trials=None,
                budget_epochs=spec.budget_epochs,
                storage=spec.storage,
                study_name=name,
                data_dir=spec.data_dir,
                space=spec.space,
                epochs=spec.epochs,
                image_size=spec.image_size,
                seed=seed,
                split_seed=spec.split_seed,
                reporter=reporter,
                artifacts=out / "artifacts",
                **engine_args(strategy),
            )
            study = load_study(spec.storage, name)
            winner = winner_test(study, spec.data_dir, reporter)
            if spec.ensemble is not None:
                ensemble_test(
                    study,
                    EnsembleRequest.parse(spec.ensemble),
                    int(winner["epochs"]),
                    data_dir=spec.data_dir,
                    artifacts=str(out / "artifacts"),
                    reporter=reporter,
                )
            studies[strategy].append(study)
        # every finished round of seeds is written, so a bench stopped at the deadline
        # still leaves the table of the seeds it completed
        write_outputs(summarize(spec, studies, None), out)
    if isinstance(reporter, BenchReporter):
        reporter.prefix = ""
    overhead = measure_overhead(spec, reporter) if spec.overhead else None
    result = summarize(spec, studies, overhead)
    result["bench_seconds_this_run"] = round(time.monotonic() - started, 1)
    write_outputs(result, out)
    return result


def winner_test(study: optuna.Study, data_dir: str | None, reporter: Reporter) -> dict[str, Any]:
    """The study's best trial retrained on train+val and tested once (stored on the study,
    so a resumed bench does not retrain it)."""
    from hpo.export import retrain_trial

    done = study.user_attrs.get(WINNER_ATTR)
    if done is not None:
        return done
    best = best_trials(study.get_trials(deepcopy=False), top=1)
    if not best:
        raise HpoError(
            f"study '{study.study_name}' has no complete trial within its budget; "
            f"raise --budget-epochs"
        )
    retrained = retrain_trial(study, best[0], data_dir=data_dir, reporter=reporter)
    store_test_probs(study, retrained)  # an ensemble arm's member need not retrain it again
    done = {
        "trial": best[0].number,
        "val_accuracy": best[0].value,
        "test_accuracy": retrained.report["accuracy"],
        "test_macro_f1": retrained.report["macro_f1"],
        "epochs": retrained.epochs,
        "params": format_params(retrained.params),
    }
    study.set_user_attr(WINNER_ATTR, done)
    reporter.message(
        f"winner trial {done['trial']}: val {done['val_accuracy']:.3f}, "
        f"test {done['test_accuracy']:.3f} (retrained on train+val for "
        f"{done['epochs']} epochs)"
    )
    return done


def curve(trials: Sequence[FrozenTrial]) -> list[tuple[int, float | None]]:
    """(cumulative epochs, best score so far) after each finished trial, in the order they
    finished: what the study had found for the epochs it had spent."""
    done = sorted(
        (t for t in trials if t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    points, spent, best = [], 0, None
    for trial in done:
        spent += epochs_trained(trial)
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            best = trial.value if best is None else max(best, trial.value)
        points.append((spent, best))
    return points


def epochs_to_reach(points: Sequence[tuple[int, float | None]], target: float) -> float:
    """Cumulative epochs at which the best score first reached ``target`` (inf: never)."""
    for spent, best in points:
        if best is not None and best >= target - 1e-12:
            return float(spent)
    return math.inf


def summarize(
    spec: BenchSpec, studies: dict[str, list[optuna.Study]], overhead: dict[str, Any] | None
) -> dict[str, Any]:
    """Per strategy: best val accuracy at the budget (median, spread), epochs to reach every
    strategy's median best, trials, pruned, wall time, and its winners' test accuracy."""
    per: dict[str, dict[str, Any]] = {}
    for strategy, group in studies.items():
        runs: list[dict[str, Any]] = []
        for study in group:
            trials = study.get_trials(deepcopy=False)
            points = curve(trials)
            winner = study.user_attrs.get(WINNER_ATTR) or {}
            runs.append(
                {
                    "study": study.study_name,
                    "best_val": points[-1][1] if points else None,
                    "epochs_used": points[-1][0] if points else 0,
                    "trials": sum(
                        t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials
                    ),
                    "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                    "wall_seconds": round(
                        sum(
                            (t.datetime_complete - t.datetime_start).total_seconds()
                            for t in trials
                            if t.datetime_complete and t.datetime_start
                        ),
                        1,
                    ),
                    "test_accuracy": winner.get("test_accuracy"),
                    "winner": winner,
                    "ensemble": None
                    if spec.ensemble is None
                    else study.user_attrs.get(
                        ENSEMBLE_ATTR.format(size=EnsembleRequest.parse(spec.ensemble).describe())
                    ),
                    "curve": points,
                }
            )
        bests = [r["best_val"] for r in runs if r["best_val"] is not None]
        tests = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]
        per[strategy] = {
            "runs": runs,
            "best_val_median": statistics.median(bests) if bests else None,
            "best_val_min": min(bests, default=None),
            "best_val_max": max(bests, default=None),
            "test_median": statistics.median(tests) if tests else None,
            "test_min": min(tests, default=None),
            "test_max": max(tests, default=None),
            "trials_median": statistics.median(r["trials"] for r in runs) if runs else 0,
            "pruned_median": statistics.median(r["pruned"] for r in runs) if runs else 0,
            "wall_median": statistics.median(r["wall_seconds"] for r in runs) if runs else 0,
            **ensemble_summary(runs),
        }
    for row in per.values():
        row["epochs_to_reach"] = {
            other: _epochs_to_median(row["runs"], target)
            for other, target in ((o, per[o]["best_val_median"]) for o in per)
            if target is not None
        }
    seeds_done = min((len(group) for group in studies.values()), default=0)
    return {
        "spec": asdict(spec),
        "storage": redact(spec.storage),
        "seeds_done": seeds_done,
        "strategies": per,
        "goal": goal(per),
        "ensemble_goal": ensemble_goal(per, DEFAULT_STRATEGY),
        "overhead": overhead,
        "versions": _versions(),
    }


def _epochs_to_median(runs: Sequence[dict[str, Any]], target: float) -> float | None:
    """The lower median over seeds of the epochs to reach ``target`` (an epoch count one
    seed really had); None when most seeds never got there."""
    values = [epochs_to_reach(r["curve"], target) for r in runs]
    value = statistics.median_low(values) if values else math.inf
    return None if math.isinf(value) else value


def goal(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 8's goal for the default against each other strategy: reach its median best
    within 40% of the epochs it needed itself, with a median test accuracy at least its."""
    mine = per.get(DEFAULT_STRATEGY)
    if mine is None:
        return {}
    verdicts = {}
    for other, row in per.items():
        if other == DEFAULT_STRATEGY:
            continue
        theirs, ours = row["epochs_to_reach"].get(other), mine["epochs_to_reach"].get(other)
        fast = theirs is not None and ours is not None and ours <= GOAL_EPOCH_SHARE * theirs
        good = (
            mine["test_median"] is not None
            and row["test_median"] is not None
            and mine["test_median"] >= row["test_median"]
        )
        verdicts[other] = {
            "epochs_default": ours,
            "epochs_other": theirs,
            "share": None if not (theirs and ours is not None) else ours / theirs,
            "share_interval": share_interval(mine["runs"], row["runs"]),
            "within_40_percent": fast,
            "test_at_least": good,
            "met": fast and good,
        }
    return verdicts


def share_interval(
    mine: list[dict[str, Any]], theirs: list[dict[str, Any]], resamples: int = 2000
) -> list[float | None] | None:
    """A 90% bootstrap interval over seeds of the default's share of another strategy's
    epochs to its median best (None for "never"), so a goal line says whether the seeds
    can tell it apart from 40% at all. Each resample draws both strategies' seeds with
    replacement and recomputes the other's median best and both epoch counts; fixed RNG
    seed, so the same studies print the same interval."""
    mine = [r for r in mine if r["best_val"] is not None]
    theirs = [r for r in theirs if r["best_val"] is not None]
    if not mine or not theirs:
        return None
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(resamples):
        ours_draw = [mine[i] for i in rng.integers(len(mine), size=len(mine))]
        their_draw = [theirs[i] for i in rng.integers(len(theirs), size=len(theirs))]
        target = statistics.median(r["best_val"] for r in their_draw)
        ours, own = (_epochs_to_median(draw, target) for draw in (ours_draw, their_draw))
        assert own is not None  # at least half of their draw reaches its own median
        shares.append(math.inf if ours is None else ours / own)
    low = float(np.quantile(shares, 0.05, method="lower"))
    high = float(np.quantile(shares, 0.95, method="higher"))
    return [None if math.isinf(v) else v for v in (low, high)]


def measure_overhead(spec: BenchSpec, reporter: Reporter, repeats: int = 2) -> dict[str, Any]:
    """hpo's cost per trial against a bare ``model.fit`` of the same model on the same data.

    Three ways to train one configuration for ``spec.epochs`` epochs with validation, each
    ``repeats`` times, interleaved so that all see the same machine load:
    ``bare`` (a notebook: in-RAM float32 arrays, build, compile, ``model.fit``), ``train``
    (hpo's :func:`hpo.training.train`: session reset, batches from the memory-mapped cache)
    and ``trial`` (a whole hpo trial from ask to tell: sampling, train, evaluate, learning-
    curve artifact, storage writes, in a throwaway study; ``run_setup`` is what the
    ``run_study`` call cost around it, once per run, not per trial). ``train`` - ``bare``
    is what the data pipeline and session reset cost; ``trial`` - ``train`` the study's
    bookkeeping.
    """
    import tempfile

    import keras

    from hpo.data import load_dataset
    from hpo.space import load_space
    from hpo.study import run_study
    from hpo.training import compiled_model, train

    space = load_space(spec.dataset, spec.space).with_overrides(
        epochs=spec.epochs, image_size=spec.image_size
    )
    data = load_dataset(
        spec.dataset,
        spec.data_dir,
        space.image_size,
        spec.split_seed,
        val_fraction=space.split["val_fraction"],
        test_fraction=space.split["test_fraction"],
    )
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = space.sample(probe.ask())  # one fixed configuration for all three
    sampled = {k: v for k, v in params.items() if space.params[k].kind != "fixed"}
    classes, augment = len(data.classes), bool(space.train["augment"])
    train_split, val_split = data.split("train"), data.split("val")

    def arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(split.rows)
        y = split.labels[rows]
        return (
            np.asarray(split.images[rows], dtype="float32"),
            loss_targets(y, single_sigmoid(classes)),
        )

    x, y = arrays(train_split)
    xv, yv = arrays(val_split)

    def bare() -> float:
        begun = time.perf_counter()
        keras.utils.set_random_seed(0)
        batch = int(params["batch_size"])
        model, one_hot = compiled_model(
            params,
            classes,
            space.image_size,
            augment=augment,
            steps_per_epoch=-(-len(x) // batch),
            schedule_epochs=spec.epochs,
        )
        labels, val_labels = (np.eye(classes)[y], np.eye(classes)[yv]) if one_hot else (y, yv)
        model.fit(
            x,
            labels,
            batch_size=batch,
            epochs=spec.epochs,
            validation_data=(xv, val_labels),
            verbose=0,
            shuffle=True,
        )
        return time.perf_counter() - begun

    def hpo_train() -> float:
        begun = time.perf_counter()
        train(
            params,
            train_split,
            num_classes=classes,
            epochs=spec.epochs,
            val_split=val_split,
            augment=augment,
            seed=0,
        )
        return time.perf_counter() - begun

    times: dict[str, list[float]] = {"bare": [], "train": [], "trial": [], "run_setup": []}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'overhead.db'}"
        optuna.create_study(storage=storage, study_name="overhead", direction="maximize")
        for i in range(repeats + 1):  # the first round warms up (imports, graph tracing)
            reporter.message(f"overhead: round {i + 1} of {repeats + 1}")
            b, t = bare(), hpo_train()
            study = optuna.load_study(study_name="overhead", storage=storage)
            study.enqueue_trial(sampled)
            begun = time.perf_counter()
            study = run_study(
                spec.dataset,
                n_trials=1,
                storage=storage,
                study_name="overhead",
                data_dir=spec.data_dir,
                space=spec.space,
                epochs=spec.epochs,
                image_size=spec.image_size,
                seed=0,
                split_seed=spec.split_seed,
                strategy="random",
                artifacts=Path(tmp) / "artifacts",
            )
            whole = time.perf_counter() - begun
            last = study.get_trials(deepcopy=False)[-1]
            started, ended = last.datetime_start, last.datetime_complete
            assert started and ended, "run_study returns once its one trial is finished"
            trial = (ended - started).total_seconds()  # ask..tell
            if i:
                times["bare"].append(b)
                times["train"].append(t)
                times["trial"].append(trial)
                times["run_setup"].append(whole - trial)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "params": params,
        "epochs": spec.epochs,
        "repeats": repeats,
        "seconds": times,
        "median_seconds": med,
        "data_pipeline_share": med["train"] / med["bare"] - 1,
        "bookkeeping_share": (med["trial"] - med["train"]) / med["bare"],
        "overhead_share": med["trial"] / med["bare"] - 1,
    }


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``bench.json`` (everything), ``bench.txt`` (the printed table), ``bench.png``."""
    (out / "bench.json").write_text(
        json.dumps(result, indent=2, default=_json) + "\n", encoding="utf-8"
    )
    console = Console(record=True, width=160, file=io.StringIO())
    for renderable in report(result):
        console.print(renderable)
    (out / "bench.txt").write_text(console.export_text(), encoding="utf-8")
    plot(result, out / "bench.png")


def _json(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(result: dict[str, Any]) -> list[Any]:
    """The table (and the overhead and goal lines) that ``hpo bench`` prints."""
    spec, per = result["spec"], result["strategies"]
    table = Table(
        title=escape(
            f"hpo bench {spec['dataset']}: {spec['image_size']}px, "
            f"{spec['epochs']} epochs/trial, budget {spec['budget_epochs']} "
            f"epochs, {result['seeds_done']} of {spec['seeds']} seeds (median [min-max])"
        ),
        title_justify="left",
    )
    table.add_column("strategy")
    table.add_column("best val acc", justify="right")
    table.add_column("test acc of winner", justify="right")
    if spec.get("ensemble"):
        table.add_column(f"test acc of ensemble ({spec['ensemble']})", justify="right")
        table.add_column("ensemble - winner [90%]", justify="right")
        table.add_column("epochs search+retrain: winner, ensemble", justify="right")
    for other in per:
        table.add_column(f"epochs to {other}'s median", justify="right")
    for column in ("trials", "pruned", "wall s"):
        table.add_column(column, justify="right")
    for strategy, row in per.items():
        reach = [
            _f(row["epochs_to_reach"].get(other), 0)
            if row["epochs_to_reach"].get(other) is not None
            else "never"
            for other in per
        ]
        table.add_row(
            strategy + (" (default)" if strategy == DEFAULT_STRATEGY else ""),
            f"{_f(row['best_val_median'])} [{_f(row['best_val_min'])}-{_f(row['best_val_max'])}]",
            f"{_f(row['test_median'])} [{_f(row['test_min'])}-{_f(row['test_max'])}]",
            *(_ensemble_cells(row) if spec.get("ensemble") else []),
            *reach,
            f"{row['trials_median']:g}",
            f"{row['pruned_median']:g}",
            f"{row['wall_median']:.0f}",
        )
    lines: list[Any] = [table]
    for other, verdict in result["goal"].items():
        share, interval = verdict["share"], verdict["share_interval"]
        spread = (
            ""
            if interval is None
            else " [90% over resampled seeds: "
            + "-".join("never" if v is None else f"{v:.0%}" for v in interval)
            + "]"
        )
        lines.append(
            f"goal vs {other}: default needs "
            f"{'-' if share is None else f'{share:.0%}'}{spread} of its epochs to reach its "
            f"median best (goal <= {GOAL_EPOCH_SHARE:.0%}), test "
            f"{'>=' if verdict['test_at_least'] else '<'} its: "
            f"{'met' if verdict['met'] else 'not met'}"
        )
    if result.get("ensemble_goal"):
        lines.append(goal_line(result["ensemble_goal"]))
    if result.get("overhead"):
        lines.append(overhead_line(result["overhead"]))
    return lines


def _ensemble_cells(row: dict[str, Any]) -> list[str]:
    """The ensemble's median test accuracy, its median paired gain over the single winner
    with the 90% bootstrap interval over seeds, and the epochs both exports trained."""
    if "ensemble_test_median" not in row:
        return ["-", "-", "-"]
    low, high = row["ensemble_gain_interval"]
    return [
        _f(row["ensemble_test_median"]),
        f"{row['ensemble_gain_median']:+.3f} [{low:+.3f} {high:+.3f}]",
        ", ".join(
            "+".join(f"{n:g}" for n in pair)
            for pair in (row["epochs_single"], row["epochs_ensemble"])
        ),
    ]


def overhead_line(overhead: dict[str, Any]) -> str:
    """What :func:`measure_overhead` found, in one line."""
    med = overhead["median_seconds"]
    return (
        f"overhead per trial ({overhead['epochs']} epochs, median of "
        f"{overhead['repeats']}): bare model.fit {med['bare']:.1f}s, hpo train() "
        f"{med['train']:.1f}s ({overhead['data_pipeline_share']:+.1%}), whole hpo "
        f"trial {med['trial']:.1f}s ({overhead['overhead_share']:+.1%}; bookkeeping "
        f"{overhead['bookkeeping_share']:+.1%}); once per run: "
        f"{med['run_setup']:.1f}s of setup"
    )


def run_overhead(
    spec: BenchSpec, out: str | Path, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Only the overhead timing (no studies): ``overhead.json`` in ``out``, for measuring a
    change to a trial's cost without the hour a whole bench takes."""
    reporter = reporter or Reporter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "spec": asdict(spec),
        "overhead": measure_overhead(spec, reporter),
        "versions": _versions(),
    }
    (out / "overhead.json").write_text(
        json.dumps(result, indent=2, default=_json) + "\n", encoding="utf-8"
    )
    return result


def plot(result: dict[str, Any], path: Path) -> Path:
    """Best-so-far validation accuracy against cumulative epochs: the median over seeds as a
    line and the range as a band, one colour per strategy."""
    from matplotlib.figure import Figure

    budget = int(result["spec"]["budget_epochs"])
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for strategy, row in result["strategies"].items():
        runs = row["runs"]
        horizon = max([budget, *(r["epochs_used"] for r in runs)])
        grid = np.arange(0, horizon + 1)
        values = np.full((len(runs), len(grid)), np.nan)
        for i, run in enumerate(runs):
            for spent, best in run["curve"]:
                if best is not None:
                    values[i, grid >= spent] = best
        if not np.isfinite(values).any():
            continue
        with warnings.catch_warnings():  # all-NaN columns before a seed's first result
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(values, axis=0)
            low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        (line,) = ax.plot(
            grid,
            median,
            drawstyle="steps-post",
            label=strategy + (" (default)" if strategy == DEFAULT_STRATEGY else ""),
        )
        ax.fill_between(grid, low, high, step="post", alpha=0.15, color=line.get_color())
    ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epochs trained in the study (cumulative)")
    ax.set_ylabel("best validation accuracy so far")
    spec = result["spec"]
    ax.set_title(
        f"{spec['dataset']} {spec['image_size']}px: median and range over "
        f"{result['seeds_done']} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _versions() -> dict[str, str]:
    from hpo.export import versions

    return versions()
