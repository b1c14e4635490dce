"""What the store guarantees beyond its chunks' CRC32C: only folders flowtrace marked are its own,
plain xarray never sees part of a first flush, the checksums bind the metadata and each chunk to
its array and position, a failed write keeps what was whole, and a run is refused before its
model loads when another run writes its store."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from store_cases import full_disk
from test_store import ATTRS, SCHEMA, assert_whole, record

from flowtrace.errors import StoreError
from flowtrace.store import MARKER, CubeStore, check_store, open_cube


def write(path: Path, count: int, offset: int = 0) -> Path:
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        store.append([shifted(i, offset) for i in range(count)])
    return path


def shifted(i: int, offset: int):
    r = record(i)
    r.values["value"][:] = i + offset  # another run's values at the same sample
    return r


def tree(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + file.read_bytes())
    return digest.hexdigest()


def edit_root(path: Path, change) -> None:  # noqa: ANN001
    root = json.loads((path / "zarr.json").read_text())
    change(root)
    (path / "zarr.json").write_text(json.dumps(root))


# -- only flowtrace's own folders ------------------------------------------------------------


def test_a_zarr_saved_with_xarray_from_a_store_is_not_taken_for_one(tmp_path: Path):
    """A subset saved with xarray keeps the store's attributes; without flowtrace's marker it is
    the user's, refused with or without overwrite, and never deleted."""
    store = write(tmp_path / "s.zarr", 5)
    subset = tmp_path / "subset.zarr"
    xr.open_zarr(store).isel(sample=[0, 1]).to_zarr(subset, zarr_format=3)
    before = tree(subset)
    for attrs in (ATTRS, {**ATTRS, "recipe": "other"}):
        for overwrite in (False, True):
            with pytest.raises(StoreError, match="is not a flowtrace store") as refused:
                CubeStore(subset, attrs, overwrite=overwrite, schema=SCHEMA)
            assert "overwrite" not in str(refused.value)
    assert tree(subset) == before
    assert xr.open_zarr(subset).sizes["sample"] == 2


def test_an_out_inside_another_store_is_refused(tmp_path: Path):
    store = write(tmp_path / "s.zarr", 3)
    before = tree(store)
    for inner in (store / "inner.zarr", store / "value" / "deeper.zarr"):
        with pytest.raises(StoreError, match=f"lies inside the flowtrace store {store}"):
            CubeStore(inner, ATTRS, schema=SCHEMA)
        assert not inner.exists()
    assert tree(store) == before


# -- plain xarray during the first flush -----------------------------------------------------


# A read that finds no root metadata, and then finds it, says so: the samples are whole.
@pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated metadata")
def test_plain_xarray_sees_no_store_or_whole_samples_during_first_flushes(tmp_path: Path):
    """`xr.open_zarr(path)` with its defaults (the README's reader) polled while stores make
    their first flush: it finds no store, or every variable with whole samples."""
    stores = [tmp_path / f"{i}.zarr" for i in range(40)]
    current: list[Path | None] = [None]
    done = threading.Event()
    partial: list[str] = []
    reads = [0]

    def poll() -> None:
        while not done.is_set():
            path = current[0]
            if path is None:
                continue
            try:
                ds = xr.open_zarr(path)
            except (FileNotFoundError, ValueError, KeyError):
                continue  # no store yet
            reads[0] += 1
            missing = {"sample", "status", "value", "word", "clean_prob_pred"} - set(ds.variables)
            if missing or ds.sizes.get("sample") != 8:
                partial.append(f"{path.name}: lacks {sorted(missing)}, sizes {dict(ds.sizes)}")
                continue
            assert_whole(ds)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for path in stores:
            with CubeStore(path, ATTRS, schema=SCHEMA, flush_samples=8) as store:
                current[0] = path
                store.append([record(i) for i in range(8)])
    finally:
        done.set()
        reader.join()
    assert not partial, f"{len(partial)} partial reads, e.g. {partial[:3]}"
    assert reads[0] > 0


# -- checksums over metadata and positions ---------------------------------------------------


def test_an_edited_sample_count_is_found(tmp_path: Path):
    store = write(tmp_path / "s.zarr", 5)

    def phantom(root: dict) -> None:  # two samples that were never analysed
        for meta in root["consolidated_metadata"]["metadata"].values():
            if meta["dimension_names"][:1] == ["sample"]:
                meta["shape"][0] += 2

    edit_root(store, phantom)
    with pytest.raises(StoreError, match=r"array \w+: its metadata \(shape, type or codecs\) was"):
        open_cube(store)
    problems = check_store(store)
    assert any("array status: its metadata" in p for p in problems), problems
    assert any("array value: its metadata" in p for p in problems), problems


def test_removing_store_format_does_not_hide_a_missing_chunk(tmp_path: Path):
    store = write(tmp_path / "s.zarr", 70)
    edit_root(store, lambda root: root["attributes"].pop("store_format"))
    (store / "word" / "c" / "1" / "0").unlink()
    problems = check_store(store)
    assert any("attributes (zarr.json) were changed" in p for p in problems), problems
    assert any("array word, samples 64-69: chunk c/1/0 is missing" in p for p in problems)
    with pytest.raises(StoreError, match="attributes .* were changed"):
        open_cube(store)


def test_removing_the_checksums_is_found(tmp_path: Path):
    from flowtrace.store import CHECKSUMS, unverified

    store = write(tmp_path / "s.zarr", 3)
    edit_root(store, lambda root: root["attributes"].pop(CHECKSUMS))
    assert any("lost its checksums" in p for p in check_store(store))
    assert unverified(store) is None  # its marker says it had them
    with pytest.raises(StoreError, match="lost its checksums"):
        open_cube(store)


def test_a_valid_chunk_from_another_store_is_found(tmp_path: Path):
    ours = write(tmp_path / "ours.zarr", 5)
    theirs = write(tmp_path / "theirs.zarr", 5, offset=100)
    chunk = Path("value", "c", "0", "0")
    assert (ours / chunk).read_bytes() != (theirs / chunk).read_bytes()
    shutil.copyfile(theirs / chunk, ours / chunk)
    assert np.isfinite(zarr.open_array(ours / "value", mode="r")[:]).all()  # it reads fine
    assert check_store(ours) == [
        f"store {ours}: array value, samples 0-4: chunk c/0/0 does not hold what was written "
        "there (a chunk of another array or store, or changed)"
    ]
    with pytest.raises(StoreError, match="array value, samples 0-4: chunk c/0/0 does not hold"):
        open_cube(ours)


def test_chunks_swapped_between_two_variables_are_found(tmp_path: Path):
    store = write(tmp_path / "s.zarr", 5)
    a, b = (store / name / "c" / "0" for name in ("clean_prob_pred", "clean_prob_true"))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    problems = check_store(store)
    assert len(problems) == 2, problems
    assert "array clean_prob_pred, samples 0-4: chunk c/0 does not hold" in problems[0]
    assert "array clean_prob_true, samples 0-4: chunk c/0 does not hold" in problems[1]


def test_damaged_metadata_is_called_damaged_not_a_store_without_samples(tmp_path: Path):
    store = write(tmp_path / "s.zarr", 3)
    text = (store / "zarr.json").read_text()
    (store / "zarr.json").write_text(text[: len(text) // 2])
    with pytest.raises(StoreError) as err:
        open_cube(store)
    assert "metadata (zarr.json) is damaged" in str(err.value)
    assert "no complete sample" not in str(err.value)
    assert check_store(store) and "is damaged" in check_store(store)[0]
    # Resuming it without overwrite keeps it, and says how to go on.
    with pytest.raises(StoreError, match="is damaged .*pass overwrite=True to replace it"):
        CubeStore(store, ATTRS, schema=SCHEMA)
    assert (store / "zarr.json").read_text() == text[: len(text) // 2]


def older(store: Path, version: int) -> Path:
    """The store as a flowtrace before metadata checksums wrote it (format 2), or before any
    checksum (format 1: no marker, no store_format)."""

    def strip(root: dict) -> None:
        root["attributes"].pop("flowtrace_checksums", None)  # flowtrace.store.CHECKSUMS
        if version >= 2:
            root["attributes"]["store_format"] = version
        else:
            root["attributes"].pop("store_format")

    edit_root(store, strip)
    if version >= 2:
        (store / MARKER).write_text(json.dumps({"format": version}))
    else:
        (store / MARKER).unlink()
    return store


@pytest.mark.parametrize("version", [1, 2])
def test_a_store_from_before_checksums_is_not_called_ok(tmp_path: Path, version: int):
    from typer.testing import CliRunner

    from flowtrace.cli import app

    store = older(write(tmp_path / "s.zarr", 5), version)
    done = CliRunner().invoke(app, ["check", str(store)])
    assert done.exit_code == 3, done.output
    assert "ok:" not in done.output
    assert f"unverified: store {store}" in " ".join(done.output.split())
    from flowtrace.store import unverified

    assert check_store(store) == []  # nothing found…
    assert "cannot be found" in unverified(store)  # …but nothing could be
    assert_whole(open_cube(store))  # still read


# -- a failed write ---------------------------------------------------------------------------


@pytest.mark.parametrize("first", [True, False], ids=["first flush", "later flush"])
def test_a_full_disk_keeps_what_was_whole_and_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: bool
):
    path = tmp_path / "s.zarr"
    store = CubeStore(path, ATTRS, schema=SCHEMA, flush_samples=1000, flush_seconds=60)
    kept = 0 if first else 5
    store.append([record(i) for i in range(kept)])
    store.flush()
    full_disk(monkeypatch, after=7)
    store.append([record(i) for i in range(kept, 10)])
    with pytest.raises(StoreError) as failed:
        store.close()
    message = str(failed.value)
    assert "\n" not in message
    assert f"store {path}: saving samples failed (No space left on device)" in message
    assert f"the {kept} samples saved before are whole and kept" in message
    assert "free space" in message and "run the same command again to resume" in message
    monkeypatch.undo()
    if first:
        with pytest.raises((FileNotFoundError, ValueError)):
            xr.open_zarr(path)  # no store: nothing was whole
    else:
        assert_whole(xr.open_zarr(path))
        assert open_cube(path).sizes["sample"] == kept and check_store(path) == []
    with CubeStore(path, ATTRS, schema=SCHEMA) as again:  # space freed: the run resumes
        assert again.done == {str(i) for i in range(kept)}
        again.append([record(i) for i in range(kept, 10)])
    ds = open_cube(path)
    assert ds.sizes["sample"] == 10
    assert_whole(ds)
    assert check_store(path) == []


# -- a lock refusal before the model loads ---------------------------------------------------


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flowtrace.store.lock import acquire_lock
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    acquire_lock(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(300)
    """
)


def test_a_store_another_run_writes_is_refused_before_the_model_loads(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
):
    import flowtrace.pipeline.analysis
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run

    def load_model(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the model was loaded before the lock was taken")

    monkeypatch.setattr(flowtrace.pipeline.analysis, "load_model", load_model)
    out = tmp_path / "held.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        options = RunOptions(data=str(tiny_data), out=out, device="cpu", limit=1)
        with pytest.raises(StoreError, match=f"being written by another run \\(pid {holder.pid}"):
            run(load_recipe("cross_frame"), options)
        # Several recipes into a folder: each store's lock is taken before the model, too.
        folder = tmp_path / "several"
        options = RunOptions(data=str(tiny_data), out=folder, device="cpu", limit=1)
        (folder / "vql_to_ql.zarr").mkdir(parents=True)
        (folder / "vql_to_ql.zarr" / "notes.txt").write_text("mine")
        with pytest.raises(StoreError, match="is not a flowtrace store"):
            run([load_recipe("cross_frame"), load_recipe("vql_to_ql")], options)
        assert sorted(p.name for p in folder.iterdir()) == ["vql_to_ql.zarr"]  # none left
    finally:
        holder.kill()
        holder.wait()
