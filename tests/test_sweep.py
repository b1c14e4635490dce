"""`Sweep`: the window, window style, sweep range and heads as one value, checked once.

Each bad field is refused where the sweep is made, by an OptionError naming that field; what
depends on the model (depth, heads) is refused by `resolve`; the CLI says either as its flag.
"""

from __future__ import annotations

import pickle

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.errors import OptionError
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.tokens.layout import TokenLayout
from flowtrace.tokens.sweep import WINDOW_STYLES, Sweep


@pytest.mark.parametrize(
    ("fields", "option", "fragment"),
    [
        ({"window": 0}, "window", "0: must be at least 1"),
        ({"window": -3}, "window", "-3: must be at least 1"),
        ({"window": 2.5}, "window", "2.5: give a whole number"),
        ({"window": True}, "window", "True: give a whole number"),
        ({"style": "diagonal"}, "style", "'diagonal': choose center, inverse, top_down"),
        ({"layers": "5-2"}, "layers", "5-2: need 0 <= start < stop"),
        ({"layers": (3, 3)}, "layers", "3-3: need 0 <= start < stop"),
        ({"layers": "4"}, "layers", "4: write START-STOP"),
        ({"layers": "a-b"}, "layers", "a-b: write START-STOP"),
        ({"layers": (1, 2, 3)}, "layers", "write START-STOP"),
        ({"heads": "x"}, "heads", "x: use all, sweep, or head indices"),
        ({"heads": "-1"}, "heads", "-1: use all"),
        ({"heads": ""}, "heads", ": use all"),
        ({"heads": ()}, "heads", "use all"),
    ],
)
def test_a_bad_field_is_refused_when_made_naming_it(fields, option, fragment):
    with pytest.raises(OptionError, match="^" + option) as caught:
        Sweep(**fields)
    assert caught.value.option == option
    assert fragment in caught.value.detail


def test_fields_read_as_given_and_the_default_sweeps_every_layer_in_every_head():
    sweep = Sweep(window=3, style="inverse", layers="1-4", heads="5,0,5")
    assert (sweep.layers, sweep.heads, sweep.heads_spec) == ((1, 4), (0, 5), "0,5")
    assert Sweep(layers=[1, 4]) == Sweep(layers="1-4") == Sweep(layers=(1, 4))
    assert Sweep(heads=[3, 1]).heads == (1, 3) and Sweep(heads="sweep").per_head
    default = Sweep()
    assert (default.window, default.style, default.layers, default.heads) == (
        None,
        "center",
        None,
        "all",
    )
    steps = list(default.steps(8))
    assert [layer for layer, _, _ in steps] == list(range(8))
    assert {heads for _, _, heads in steps} == {None}
    assert steps[0][1] == (0, 1) and steps[4][1] == (3, 4, 5)  # the toy's window: 3 layers
    assert set(WINDOW_STYLES) == {"center", "inverse", "top_down", "bottom_up"}


def test_resolve_settles_the_window_and_refuses_what_the_model_lacks():
    assert Sweep().resolve(8).window == 3 and Sweep().resolve(32).window == 9
    assert Sweep(window=5).resolve(8).window == 5
    resolved = Sweep(layers=(0, 8), heads=(3,)).resolve(8, 4)
    assert resolved.layers == (0, 8) and resolved.heads == (3,)
    cases = [
        (Sweep(window=9), "window", "9: must be between 1 and 8"),
        (Sweep(layers="2-9"), "layers", "2-9: need 0 <= start < stop <= 8"),
        (Sweep(heads="1,4"), "heads", "1,4: use all, sweep, or head indices such as 0,5,7 (this"),
    ]
    for sweep, option, fragment in cases:
        with pytest.raises(OptionError) as caught:
            sweep.resolve(8, 4)
        assert caught.value.option == option and fragment in str(caught.value)
    Sweep(heads="1,4").resolve(8)  # heads unknown: nothing to check them against


def test_steps_give_each_position_its_window_and_each_head_its_own_cell():
    steps = list(Sweep(window=1, layers=(2, 4), heads="sweep").steps(8, 2))
    assert steps == [(2, (2,), (0,)), (2, (2,), (1,)), (3, (3,), (0,)), (3, (3,), (1,))]
    assert list(Sweep(window=3, style="top_down", layers="5-6").steps(8)) == [(5, (5, 6, 7), None)]
    with pytest.raises(OptionError, match="^heads: sweep: each head alone needs"):
        list(Sweep(heads="sweep").steps(8))
    with pytest.raises(OptionError, match="^layers: 0-9"):
        list(Sweep(layers=(0, 9)).steps(8))


def test_a_sweep_is_one_hashable_value_that_travels_whole():
    sweep = Sweep(window=3, style="bottom_up", layers=(1, 3), heads="0,2")
    assert pickle.loads(pickle.dumps(sweep)) == sweep  # Ray sends options to its workers
    assert len({sweep, Sweep(window=3, style="bottom_up", layers="1-3", heads=(2, 0))}) == 1
    with pytest.raises(AttributeError):
        sweep.window = 4  # frozen: checked once, never changed after


def test_the_old_loose_arguments_say_what_to_give_instead():
    recipe = load_recipe("cross_frame")
    layout = TokenLayout(4, {}, (1, 1, 1), ("A", "B"), "A")
    with pytest.raises(TypeError, match=r"Sweep\(window, style, layers, heads\)"):
        recipe.conditions(layout, 8, 3, "center")
    with pytest.raises(OptionError, match=r"^sweep: \(0, 2\): give a Sweep\(") as caught:
        run(recipe, RunOptions(sweep=(0, 2)))
    assert caught.value.option == "sweep"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sweep", "a-b"], "--sweep a-b: write START-STOP"),
        (["--sweep", "5-2"], "--sweep 5-2: need 0 <= start < stop"),
        (["--heads", "x"], "--heads x: use all, sweep, or head indices"),
        (["--window", "0"], "--window 0: must be at least 1"),
    ],
)
def test_the_cli_says_a_bad_field_as_its_flag(flags, message, tmp_path):
    argv = ["run", "cross_frame", "--model", "/no/such/model", "--out", str(tmp_path / "o")]
    done = CliRunner().invoke(app, [*argv, *flags])
    assert done.exit_code == 2
    assert message in " ".join(done.output.split()), done.output
    assert not (tmp_path / "o").exists()
