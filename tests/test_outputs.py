"""Files flowtrace writes for people (figures, report pages and sites, tables, pathway files):
each written whole (a kill leaves the old file), never over a file flowtrace did not write for
the same purpose, named from stores without losing dots; bad output places as one line; user
text printed as it is.

The shipped toy stores serve as stores (copied: a figure is written beside its store)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

import flowtrace
from flowtrace.cli import app
from flowtrace.errors import FlowtraceError, OptionError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "toy" / "cross_frame.zarr"
USER_HTML = b"<html>my own notes</html>"
USER_PNG = b"\x89PNG my own picture"


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SHIPPED, target)
    return target


def _cli(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception  # a traceback is a failure
    return done.exit_code, done.output


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


# --- written whole ------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from flowtrace.outputs import write_file

    target = tmp_path / "table.csv"
    target.write_bytes(b"old,table\n1,2\n")
    real = io.open

    class Broken:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def opening(file, mode="r", *args, **kwargs):
        handle = real(file, mode, *args, **kwargs)
        return Broken(handle) if "w" in mode else handle

    monkeypatch.setattr(io, "open", opening)
    with pytest.raises(OptionError, match=r"table.csv: cannot be written \(the disk is full\)"):
        write_file(target, b"new,table\n" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old,table\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


# Run in a subprocess: every write of more than 1000 bytes under FOLDER writes half, says so in
# READY and waits to be killed (the CLI's own command line follows).
STALL = r"""
import builtins, io, os, sys, time
ready, folder = sys.argv[1], os.path.realpath(sys.argv[2])
real = io.open

class Stalling:
    def __init__(self, handle):
        self.handle = handle
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def write(self, data):
        if len(data) > 1000:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            open(ready, "w").write("half")
            time.sleep(300)
        return self.handle.write(data)

def opening(file, mode="r", *args, **kwargs):
    handle = real(file, mode, *args, **kwargs)
    here = isinstance(file, int) or os.path.realpath(os.fspath(file)).startswith(folder)
    return Stalling(handle) if here and any(m in mode for m in "wax") else handle

io.open = builtins.open = opening
sys.argv = ["flowtrace", *sys.argv[3:]]
import flowtrace
from flowtrace.cli import app
app()
"""


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_kill_during_a_report_or_figure_write_leaves_the_old_file_whole(command, tmp_path):
    store = _copy(tmp_path, "run/exp.zarr")
    if command == "report":
        args, written = ["report", str(store), "--out", str(tmp_path / "run" / "r.html")], "r.html"
    else:
        args, written = ["plot", str(store)], "exp.html"
    code, output = _cli(*args)  # the page or figure a first time
    assert code == 0, output
    old = (tmp_path / "run" / written).read_bytes()
    ready = tmp_path / "ready"
    script = tmp_path / "stall.py"
    script.write_text(STALL)
    code = Path(flowtrace.__file__).resolve().parents[1]  # the flowtrace under test
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(ready), str(tmp_path / "run"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.time() < deadline, "the write never started"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # half of a file written
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert (tmp_path / "run" / written).read_bytes() == old
    # The killed write's temporary file is cleared by the next write of that name.
    code, output = _cli(*args)
    assert code == 0, output
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


# --- names from stores, and never over another's file -------------------------------------


def test_figures_of_stores_named_with_dots_are_their_own(tmp_path):
    for name in ("exp.a.zarr", "exp.b.zarr", "threshold_0.25.zarr", "my runs.zarr"):
        _copy(tmp_path / "out", name)
        code, output = _cli("plot", str(tmp_path / "out" / name))
        assert code == 0, output
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".html", ".png"))
    assert names == [
        "exp.a.html", "exp.a.png", "exp.b.html", "exp.b.png", "my runs.html", "my runs.png",
        "threshold_0.25.html", "threshold_0.25.png",
    ]  # fmt: skip
    assert (tmp_path / "out" / "threshold_0.25.png").read_bytes()[:4] == b"\x89PNG"


def test_the_users_own_files_beside_a_store_are_never_replaced(tmp_path):
    store = _copy(tmp_path, "mine.zarr")
    (tmp_path / "mine.html").write_bytes(USER_HTML)
    (tmp_path / "mine.png").write_bytes(USER_PNG)
    code, output = _cli("plot", str(store))
    assert code == 0, output
    assert (tmp_path / "mine.html").read_bytes() == USER_HTML
    assert (tmp_path / "mine.png").read_bytes() == USER_PNG
    other = tmp_path / "mine.figure.html"
    assert other.read_text().count("vega") > 0 and (tmp_path / "mine.figure.png").exists()
    assert f"warning: {tmp_path / 'mine.html'} was not written by flowtrace for mine.zarr" in (
        " ".join(output.split())
    )
    assert str(other) in output
    # Drawn again: its own figure is replaced, no third name.
    code, output = _cli("plot", str(store))
    assert code == 0 and str(other) in output
    assert not (tmp_path / "mine.figure-2.html").exists()
    # Named by the user: refused, both files as they were.
    code, output = _cli("plot", str(store), "--out", str(tmp_path / "mine"))
    assert code == 2
    line = _one_error_line(output)
    assert f"--out {tmp_path / 'mine.html'}: exists, and flowtrace did not write it" in line
    assert (tmp_path / "mine.html").read_bytes() == USER_HTML
    # A figure the user edited since is the user's.
    edited = tmp_path / "mine.figure.html"
    edited.write_text(edited.read_text() + "<!-- my note -->")
    code, output = _cli("plot", str(store))
    assert code == 0 and "mine.figure-2.html" in output
    assert edited.read_text().endswith("<!-- my note -->")


def test_two_stores_sharing_a_name_less_a_suffix_do_not_share_a_figure(tmp_path):
    from flowtrace.plots import chart_for, save_store_figure
    from flowtrace.store import open_cube

    a, b = _copy(tmp_path, "x.zarr"), _copy(tmp_path, "x")
    chart = chart_for(open_cube(a))
    assert save_store_figure(chart, a)[0] == tmp_path / "x.html"
    with pytest.warns(UserWarning, match="was not written by flowtrace for x"):
        assert save_store_figure(chart, b)[0] == tmp_path / "x.figure.html"


def test_a_run_derives_its_figure_the_same_way_and_prints_paths_literally(tmp_path):
    """The run's figure goes through the same function (the user's file kept), and paths with
    Rich markup in them print as they are (`[/]` crashed after the run, `[bold]` vanished)."""
    folder = tmp_path / "[bold]runs[" / "]"  # the path reads …/[bold]runs[/]/mine.zarr
    folder.mkdir(parents=True)
    (folder / "mine.html").write_bytes(USER_HTML)
    store = folder / "mine.zarr"
    args = ["run", "cross_frame", "--model", "toy", "--limit", "1", "--device", "cpu"]
    with pytest.warns(UserWarning, match="mine.html was not written by flowtrace for mine.zarr"):
        code, output = _cli(*args, "--out", str(store))
    assert code == 0, output
    assert (folder / "mine.html").read_bytes() == USER_HTML
    flat = " ".join(output.split())
    assert f"figure: {folder / 'mine.figure.html'}" in flat
    assert f"store: {store}" in flat
    assert (folder / "mine.figure.png").exists()


def test_user_text_in_messages_is_printed_as_it_is(tmp_path):
    for name in ("[/]x.zarr", "[bold]y[/bold].zarr", ":smile: z.zarr"):
        code, output = _cli("show", str(tmp_path / name))
        assert code == 2
        assert f"store {tmp_path / name} does not exist" in _one_error_line(output)


# --- pages, sites and tables ----------------------------------------------------------------


def test_report_refuses_a_folder_and_a_page_it_did_not_write(tmp_path):
    store = _copy(tmp_path, "s.zarr")
    (tmp_path / "pages").mkdir()
    code, output = _cli("report", str(store), "--out", str(tmp_path / "pages"))
    assert code == 2
    assert f"--out {tmp_path / 'pages'}: is a folder" in _one_error_line(output)
    mine = tmp_path / "index.html"
    mine.write_bytes(USER_HTML)
    code, output = _cli("report", str(store), "--out", str(mine))
    assert code == 2 and "flowtrace did not write it" in _one_error_line(output)
    assert mine.read_bytes() == USER_HTML
    # Its own page is replaced (twice: the record follows the new page).
    for _ in range(2):
        code, output = _cli("report", str(store), "--out", str(tmp_path / "r.html"))
        assert code == 0, output


def test_a_site_is_not_written_into_a_folder_of_the_users_files(tmp_path):
    store = _copy(tmp_path, "in/s.zarr")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.html").write_bytes(USER_HTML)
    code, output = _cli("report", str(store), "--site", str(docs))
    assert code == 2 and f"--site {docs / 'index.html'}: exists" in _one_error_line(output)
    assert sorted(p.name for p in docs.iterdir()) == ["index.html"]  # nothing written
    code, output = _cli("report", str(store), "--site", str(tmp_path / "site"))
    assert code == 0, output
    code, output = _cli("report", str(store), "--site", str(tmp_path / "site"))
    assert code == 0, output  # its own site, rewritten


def test_query_writes_its_table_whole_and_refuses_a_folder_or_the_users_file(tmp_path):
    store = _copy(tmp_path, "s.zarr")
    out = tmp_path / "t.csv"
    for _ in range(2):
        code, output = _cli("query", str(store), "--mean", "sample", "--out", str(out))
        assert code == 0, output
    ds = xr.open_zarr(store)
    ok = ds.isel(sample=ds["status"].values == "ok")
    table = pd.read_csv(out)
    mean = ok["rel_change_pred"].mean("sample")
    for row in table.itertuples():
        want = float(mean.sel(layer=row.layer, source=row.source, target=row.target))
        assert row.rel_change_pred == pytest.approx(want, rel=1e-5, nan_ok=True)
    assert len(table) == mean.size
    code, output = _cli("query", str(store), "--out", str(tmp_path))
    assert code == 2 and f"--out {tmp_path}: is a folder" in _one_error_line(output)
    mine = tmp_path / "mine.csv"
    mine.write_text("my,table\n")
    code, output = _cli("query", str(store), "--out", str(mine))
    assert code == 2 and "flowtrace did not write it" in _one_error_line(output)
    assert mine.read_text() == "my,table\n"


def test_pathways_refuses_an_out_holding_the_users_recipe_before_any_run(tmp_path):
    out = tmp_path / "found"
    out.mkdir()
    (out / "recipe.py").write_text("# my recipe\n")
    flow_map = ROOT / "results" / "toy" / "flow_map.zarr"
    code, output = _cli("pathways", str(flow_map), "--find", "--out", str(out))
    assert code == 2
    assert f"--out {out / 'recipe.py'}: exists, and flowtrace did not write it" in (
        _one_error_line(output)
    )
    assert (out / "recipe.py").read_text() == "# my recipe\n"


# --- read-only places --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["plot", "report"])
def test_read_only_output_is_one_error_line(command, tmp_path, monkeypatch):
    from read_only import seal

    store = _copy(tmp_path, "ro/s.zarr")
    seal(tmp_path / "ro", monkeypatch)
    args = ["plot", str(store)] if command == "plot" else ["report", str(store), "--out"]
    if command == "report":
        args.append(str(tmp_path / "ro" / "r.html"))
    code, output = _cli(*args)
    assert code == 2
    assert "cannot be written (Permission denied)" in _one_error_line(output)
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["s.zarr"]


# --- a figure's size ----------------------------------------------------------------------


def _big(rows: int = 1000, columns: int = 1001) -> xr.Dataset:
    """A program's output of rows × columns cells per sample, drawn by the generic figure."""
    return xr.Dataset(
        {"out": (("sample", "row", "column"), np.zeros((1, rows, columns), dtype=np.float32))},
        coords={
            "sample": ["a/0"],
            "row": [f"r{i}" for i in range(rows)],
            "column": [f"c{i}" for i in range(columns)],
            "status": ("sample", ["ok"]),
        },
        attrs={"recipe": "big", "recipe_kind": "TraceProgram"},
    )


def test_a_figure_over_the_cell_budget_is_refused_before_it_is_drawn(monkeypatch):
    from flowtrace.plots import FIGURE_CELLS, chart_for
    from flowtrace.plots import generic as generic_module

    assert FIGURE_CELLS == 1_000_000  # docs/errors.md names this budget
    drawn = []
    monkeypatch.setattr(generic_module, "analysed", lambda ds: drawn.append(ds) or ds)
    with pytest.raises(FlowtraceError, match=r"1000 row × 1001 column = 1,001,000 cells"):
        chart_for(_big())
    assert drawn == []  # not a single table built
    monkeypatch.setenv("FLOWTRACE_FIGURE_CELLS", "20")
    assert chart_for(_big(4, 5)) is not None and len(drawn) == 1  # at the budget: drawn
    with pytest.raises(FlowtraceError, match="over the 20 a figure draws"):
        chart_for(_big(4, 6))


def test_a_run_keeps_its_store_and_skips_a_figure_too_large(tmp_path):
    from flowtrace.outputs import OutputWarning
    from flowtrace.plots.run_figures import store_figure

    with pytest.warns(OutputWarning, match="no figure for .*over the 1,000,000 a figure draws"):
        assert store_figure(_big(), tmp_path / "big.zarr") == []
    assert list(tmp_path.iterdir()) == []


# --- the record of what flowtrace wrote ---------------------------------------------------


def test_writers_in_one_folder_at_once_keep_every_entry_of_the_record(tmp_path):
    from flowtrace.outputs import RECORD, claims

    def writer(k: int) -> None:
        for i in range(15):
            with claims(tmp_path) as held:
                held.write(tmp_path / f"w{k}-{i}.txt", f"{k} {i}", f"writer {k}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = json.loads((tmp_path / RECORD).read_text())["files"]
    assert len(files) == 90
    import hashlib

    for name, entry in files.items():
        k, i = name.removeprefix("w").removesuffix(".txt").split("-")
        assert entry["for"] == f"writer {k}"
        assert entry["sha256"] == [hashlib.sha256(f"{k} {i}".encode()).hexdigest()]


# --- paths in stores ----------------------------------------------------------------------


def test_a_store_names_model_recipe_and_data_in_the_home_folder_as_tilde(
    tmp_path, monkeypatch, tiny_model_dir, tiny_data
):
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run
    from flowtrace.store import open_cube

    home = tmp_path / "home"
    shutil.copytree(tiny_model_dir, home / "models" / "tiny")
    shutil.copytree(tiny_data, home / "data" / "tiny")
    (home / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "cross_frame.py", home / "recipes" / "mine.py")
    monkeypatch.setenv("HOME", str(home))
    options = RunOptions(
        model=str(home / "models" / "tiny"),
        data=f"tvbench:{home / 'data' / 'tiny'}",
        limit=1,
        sample_mode="all",
        plot=False,
        out=tmp_path / "s.zarr",
    )
    recipe = load_recipe(str(home / "recipes" / "mine.py"))
    run(recipe, options)
    attrs = open_cube(tmp_path / "s.zarr").attrs
    assert attrs["model"] == "~/models/tiny"
    assert attrs["data"] == "tvbench:~/data/tiny" and attrs["data_root"] == "~/data/tiny"
    assert attrs["recipe_source"].startswith("~/recipes/mine.py#sha256:")
    assert not [k for k, v in attrs.items() if str(home) in str(v)]
    # Read back as written: the same run resumes the store (the names expand again).
    assert run(recipe, options).resumed == 1


def test_a_search_cube_is_written_whole_and_never_over_a_users_folder(tmp_path: Path):
    """`pathways --find` writes its cubes beside their place and renames them in; a folder of
    that name it did not write is refused, untouched."""
    import xarray as xr

    from flowtrace.errors import OptionError
    from flowtrace.pathways.find_pathway import CUBE_MARKER, write_cube

    cube = xr.Dataset({"x": ("k", np.arange(3))})
    write_cube(cube, tmp_path / "frontier_cube")
    write_cube(cube.assign(x=("k", np.arange(3) + 10)), tmp_path / "frontier_cube")
    assert xr.open_zarr(tmp_path / "frontier_cube")["x"].values.tolist() == [10, 11, 12]
    assert (tmp_path / "frontier_cube" / CUBE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frontier_cube"]  # nothing left over
    mine = tmp_path / "walk_cube"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="not written by a pathway search"):
        write_cube(cube, mine)
    assert (mine / "notes.txt").read_text() == "mine"
