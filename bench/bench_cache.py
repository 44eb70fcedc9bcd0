"""Benchmark the decode cache: cold build (1 thread vs all cores) against a cache hit.

    python bench/bench_cache.py [--data-dir ../shared/data/cats_and_dogs_small] [--image-size 64]

"Cold" means an empty hpo cache; the files themselves are read once beforehand so that both
cold builds find them in the OS page cache and the comparison measures decoding, not disk.
Writes bench/results/cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

from hpo.data import load_dataset  # noqa: E402


def _timed_load(data_dir: Path, image_size: int, cache_dir: Path, workers: int | None) -> dict:
    start = time.perf_counter()
    ds = load_dataset("catsdogs", data_dir, image_size, cache_dir=cache_dir, workers=workers)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "images": len(ds.images),
        "cache_hit": ds.cache_hit,
        "images_per_s": len(ds.images) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cats_and_dogs_small"
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hits", type=int, default=5, help="cache-hit loads to average")
    args = parser.parse_args()

    files = [p for p in args.data_dir.rglob("*") if p.is_file()]
    for path in files:  # warm the OS page cache (see module docstring)
        path.read_bytes()
    cores = os.cpu_count() or 1
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        for workers in (1, cores):
            cache = Path(tmp) / f"cold-{workers}"
            rows.append(
                {
                    "case": f"cold build, {workers} thread{'s' * (workers > 1)}",
                    "workers": workers,
                    **_timed_load(args.data_dir, args.image_size, cache, workers),
                }
            )
        hits = [_timed_load(args.data_dir, args.image_size, cache, cores) for _ in range(args.hits)]
        assert all(h["cache_hit"] for h in hits)
        best = min(hits, key=lambda h: h["seconds"])
        rows.append({"case": f"cache hit (best of {args.hits})", "workers": cores, **best})

    result = {
        "data_dir": str(args.data_dir),
        "files": len(files),
        "image_size": args.image_size,
        "cpu_count": cores,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    out = REPO / "bench" / "results" / "cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"hpo decode cache: {len(files)} files of {args.data_dir.name} "
        f"at {args.image_size} px, {cores} cores"
    )
    for column in ("case", "seconds", "images/s", "vs 1-thread cold"):
        table.add_column(column, justify="left" if column == "case" else "right")
    base = rows[0]["seconds"]
    for row in rows:
        table.add_row(
            row["case"],
            f"{row['seconds']:.3f}",
            f"{row['images_per_s']:,.0f}",
            f"{base / row['seconds']:.1f}x",
        )
    Console().print(table)
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
