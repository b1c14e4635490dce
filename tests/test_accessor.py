"""`ds.flowtrace` is on every xarray Dataset once flowtrace is imported, in either order, while
`import flowtrace` itself stays free of xarray and pandas (every `flowtrace` command imports it).

Each case runs in a fresh interpreter: in this one, xarray is long imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "results" / "toy" / "cross_frame.zarr"


def run_python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_flowtrace_imports_neither_xarray_nor_pandas(tmp_path):
    out = run_python(
        """
        import sys
        import flowtrace
        heavy = [m for m in ("xarray", "pandas", "zarr", "numpy", "torch") if m in sys.modules]
        print("heavy:", heavy)
        """,
        tmp_path,
    )
    assert "heavy: []" in out


# The store is opened with plain xarray: the accessor must come from `import flowtrace` alone.
USE = f"""
    ds = xr.open_zarr({str(STORE)!r})
    from flowtrace.accessor import FlowtraceAccessor
    assert type(ds.flowtrace) is FlowtraceAccessor, type(ds.flowtrace)
    ok = int((ds.status.values == "ok").sum())
    assert ds.flowtrace.analysed().sizes["sample"] == ok > 0
    assert "recipe: cross_frame" in ds.flowtrace.summary()
    table = ds.flowtrace.table("rel_change_pred", source="earlier_frames", target="frame")
    assert list(table["layer"]) == list(ds.layer.values)
    import flowtrace.api  # registering again (flowtrace.open's module) warns of nothing
    assert type(flowtrace.open({str(STORE)!r}).flowtrace) is FlowtraceAccessor
    print("accessor ok")
"""

ORDERS = {
    "flowtrace then xarray": "import flowtrace\nimport xarray as xr\n",
    "xarray then flowtrace": "import xarray as xr\nimport flowtrace\n",
    # A lookup alone (optional-dependency checks do this) must not use up the hook.
    "xarray looked up, then imported": (
        "import importlib.util\nimport flowtrace\n"
        "assert importlib.util.find_spec('xarray') is not None\nimport xarray as xr\n"
    ),
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_accessor_on_a_store_opened_with_plain_xarray(order, tmp_path):
    assert STORE.is_dir(), STORE
    out = run_python(ORDERS[order] + textwrap.dedent(USE), tmp_path)
    assert "accessor ok" in out


def test_the_import_hook_leaves_once_xarray_is_in(tmp_path):
    out = run_python(
        """
        import sys
        import flowtrace
        from flowtrace import accessor
        assert accessor._finder in sys.meta_path
        import xarray as xr
        assert accessor._finder not in sys.meta_path
        spec = sys.modules["xarray"].__spec__
        assert "exec_module" not in vars(spec.loader)  # the loader's own method again
        assert isinstance(xr.Dataset().flowtrace, accessor.FlowtraceAccessor)
        print("hook gone")
        """,
        tmp_path,
    )
    assert "hook gone" in out
