"""Check what `flowtrace run recipes/cross_frame.py` wrote inside the container (.ci/container).

    python .ci/check_store.py RESULTS [--samples N] [--uid UID] [--compare-host]

RESULTS is the host folder that was mounted on /work/results. Reads it with this python (the CI
venv's xarray and zarr), not the image's: one store and its two figures under cross_frame/, the
expected number of samples all analysed, files owned by the image's unprivileged user; with
--compare-host, the recipe is run here too and every variable must match the container's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

# Provenance that must not depend on where the run happened (python, torch build, commit may).
SAME_ATTRS = ("recipe", "model_revision", "adapter", "dtype", "frames", "window", "engine")


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--compare-host", action="store_true")
    args = parser.parse_args()

    stores = sorted((args.results / "cross_frame").glob("*.zarr"))
    names = [s.name for s in stores]
    check(len(stores) == 1, f"one store under {args.results}/cross_frame: {names}")
    store = stores[0]
    for suffix, magic in ((".html", b"<!DOCTYPE html>"), (".png", b"\x89PNG\r\n\x1a\n")):
        figure = store.with_suffix(suffix)
        data = figure.read_bytes() if figure.is_file() else b""
        check(data[: len(magic)].lower() == magic.lower(), f"figure {figure.name} ({len(data)} B)")
    if args.uid is not None:
        owners = {p.stat().st_uid for p in [store, *store.rglob("*")]}
        check(owners == {args.uid}, f"written by uid {args.uid}, not root: owners {owners}")

    ds = xr.open_zarr(store)
    status = np.array([str(s) for s in ds["status"].values.tolist()])
    check(ds.sizes["sample"] == args.samples, f"{ds.sizes['sample']} samples (want {args.samples})")
    counts = {str(k): int(n) for k, n in zip(*np.unique(status, return_counts=True), strict=True)}
    check(bool((status == "ok").all()), f"status all ok: {counts}")
    check(ds.attrs.get("recipe") == "cross_frame", f"recipe attr {ds.attrs.get('recipe')!r}")
    check(str(ds.attrs.get("device", "")).startswith("cpu"), f"device {ds.attrs.get('device')}")
    rel = ds["rel_change_pred"].values
    check(bool(np.isfinite(rel).all()), f"rel_change_pred finite, shape {rel.shape}")
    print(
        f"      image: python {ds.attrs.get('python')}, torch {ds.attrs.get('torch')}, "
        f"transformers {ds.attrs.get('transformers')}, nnsight {ds.attrs.get('nnsight')}"
    )

    if args.compare_host:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "host.zarr"
            cmd = [sys.executable, "-m", "flowtrace", "run", "recipes/cross_frame.py"]
            run = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
            log = "" if run.returncode == 0 else f"\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
            check(run.returncode == 0, f"the same recipe run on the host{log}")
            host = xr.open_zarr(out).load()
        print(
            f"      host:  python {host.attrs.get('python')}, torch {host.attrs.get('torch')}, "
            f"transformers {host.attrs.get('transformers')}, nnsight {host.attrs.get('nnsight')}"
        )
        moved = [k for k in ("torch", "transformers", "nnsight") if ds.attrs[k] != host.attrs[k]]
        if moved:
            print(f"      note: {', '.join(moved)} differ from the image's (docker/lock.py)")
        check(host.sizes == ds.sizes, f"host run has the same sizes {dict(host.sizes)}")
        digest = [str(d.attrs.get("recipe_source", "")).partition("#")[2] for d in (ds, host)]
        check(digest[0] == digest[1] != "", f"recipe source {digest[0]} as the host run's")
        for key in SAME_ATTRS:
            mine, theirs = ds.attrs.get(key), host.attrs.get(key)
            check(mine == theirs, f"attr {key} {mine!r} as the host run's")
        for name in sorted(set(ds.variables) | set(host.variables)):
            a, b = ds[name].values, host[name].values
            if a.dtype.kind == "f":
                diff = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
                same = a.shape == b.shape
                same = same and np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
                check(same, f"{name} matches the host run (max |diff| {diff:.2g})")
            elif name == "video":  # relative to the data root (absolute only if asked for)
                mine, theirs = _relative(a.tolist(), ds.attrs), _relative(b.tolist(), host.attrs)
                check(mine == theirs, f"{name} matches the host run (relative to data_root)")
            else:
                check(a.tolist() == b.tolist(), f"{name} matches the host run")


def _relative(videos: list, attrs: dict) -> list[str]:
    root = str(attrs.get("data_root", ""))
    return [str(Path(v).relative_to(root)) if Path(v).is_absolute() else str(v) for v in videos]


if __name__ == "__main__":
    main()
