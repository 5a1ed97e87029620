import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers.run.params import (
    MAX_NAME,
    ParamError,
    check_name,
    load_yaml,
    notebook_parameters,
    parse_overrides,
    resolve,
)
from helpers.run.runner import all_defaults

DEFAULTS = {
    "01_data": {"run_dir": "", "seed": 0, "dataset": "digits", "val_fraction": 0.1},
    "02_train": {"run_dir": "", "seed": 0, "epochs": 5, "lr": 0.1, "layers": [1, 2]},
}


def write_nb(path, source, tags=("parameters",)):
    nb = new_notebook()
    cell = new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def test_parameters_cell_is_parsed_with_defaults_and_comments(tmp_path):
    nb = write_nb(tmp_path / "x.ipynb", 'run_dir = ""  # where\nseed = 3\nnames = ["a", "b"]\nscale = 0.5')
    assert notebook_parameters(nb) == {"run_dir": "", "seed": 3, "names": ["a", "b"], "scale": 0.5}


def test_missing_parameters_cell_is_an_error(tmp_path):
    nb = write_nb(tmp_path / "x.ipynb", "seed = 0", tags=())
    with pytest.raises(ParamError, match="no cell tagged 'parameters'"):
        notebook_parameters(nb)


def test_non_literal_parameter_is_an_error(tmp_path):
    nb = write_nb(tmp_path / "x.ipynb", "import os\nseed = 0")
    with pytest.raises(ParamError, match="name = literal"):
        notebook_parameters(nb)


def test_layers_later_wins_and_sections_beat_shared_keys():
    layers = [
        ("default.yaml", {"seed": 1, "epochs": 2}),
        ("file", {"02_train": {"epochs": 7}}),
        ("-p", parse_overrides(["seed=4", "02_train.lr=0.5"])),
    ]
    out = resolve(DEFAULTS, layers)
    assert out["01_data"] == {"seed": 4, "dataset": "digits", "val_fraction": 0.1}
    assert out["02_train"] == {"seed": 4, "epochs": 7, "lr": 0.5, "layers": [1, 2]}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) epoch\b.*valid shared keys: dataset, epochs"):
        resolve(DEFAULTS, [("-p", {"epoch": 3})])
    with pytest.raises(
        ParamError,
        match=r"for phase 01_data in -p \(did you mean 02_train.epochs\?\); valid: dataset, seed, val_fraction",
    ):
        resolve(DEFAULTS, [("-p", {"01_data": {"epochs": 3}})])


def test_wrong_type_is_an_error_but_int_for_float_is_fine():
    with pytest.raises(ParamError, match="'epochs' must be int"):
        resolve(DEFAULTS, [("-p", parse_overrides(["epochs=three"]))])
    with pytest.raises(ParamError, match="'seed' must be int.*bool"):
        resolve(DEFAULTS, [("-p", {"seed": True})])
    assert resolve(DEFAULTS, [("-p", {"lr": 1})])["02_train"]["lr"] == 1


def test_run_dir_is_not_a_configurable_parameter():
    with pytest.raises(ParamError):
        resolve(DEFAULTS, [("-p", {"run_dir": "/tmp"})])


def test_override_syntax_errors():
    with pytest.raises(ParamError, match="key=value"):
        parse_overrides(["epochs"])
    assert parse_overrides(["roles=[trained, init]"]) == {"roles": ["trained", "init"]}


def test_every_project_notebook_has_parameters_and_shared_keys_agree():
    defaults = all_defaults()
    seen = {}
    for phase_id, params in defaults.items():
        assert params["run_dir"] == "" and params["seed"] == 0, phase_id
        for name, value in params.items():
            assert seen.setdefault(name, value) == value, f"{phase_id} disagrees on the default of {name}"


@pytest.mark.parametrize("raw", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_refused_naming_the_key(raw):
    """Issue 29.3: `-p 02_train.lr=.nan` passed validation and failed writing the run record."""
    with pytest.raises(ParamError, match=r"02_train \(set by -p \(02_train\.lr\)\): parameter 'lr' must be a finite"):
        resolve(DEFAULTS, [("-p", parse_overrides([f"02_train.lr={raw}"]))])
    with pytest.raises(ParamError, match=r"parameter 'layers' must hold finite numbers.*got \[1, (nan|inf|-inf)\]"):
        resolve(DEFAULTS, [("-p", parse_overrides([f"layers=[1, {raw}]"]))])


def test_values_a_run_record_cannot_hold_are_refused_naming_the_key():
    """YAML reads an unquoted 2024-01-01 as a date: it passed as a list entry and failed writing the record."""
    with pytest.raises(ParamError, match=r"parameter 'layers' holds 2024-01-01, a date.*quote it"):
        resolve(DEFAULTS, [("-p", parse_overrides(["layers=[2024-01-01]"]))])


def test_a_misspelled_phase_section_gets_a_suggestion():
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) 02_trian in -p \(did you mean 02_train\?\)"):
        resolve(DEFAULTS, [("-p", parse_overrides(["02_trian.epochs=3"]))])


@pytest.mark.parametrize(
    "override, hint",
    [
        ("02_train.adapt_epochs=5", "02b_adapt.adapt_epochs"),  # issue 30.1: it suggested epochs (02_train's own)
        ("02_train.adapt_epoch=5", "02b_adapt.adapt_epochs"),  # near, in another phase
        ("02_train.epoch=5", "epochs"),  # near in its own phase: named bare
        ("02_train.calibration_method=[minmax]", "04_quantize.calibration_methods"),
    ],
)
def test_a_misspelled_phase_key_gets_the_nearest_key_of_any_phase(override, hint):
    """Across the project's real phases: a key of another phase is named with its phase id."""
    name = override.split("=")[0].split(".")[1]
    with pytest.raises(
        ParamError, match=rf"unknown parameter\(s\) {name} for phase 02_train in -p \(did you mean {hint}\?\)"
    ):
        resolve(all_defaults(), [("-p", parse_overrides([override]))])


def test_a_missing_params_file_names_its_near_namesake(tmp_path):
    (tmp_path / "cifar10.yaml").write_text("epochs: 3\n")
    with pytest.raises(
        ParamError,
        match=rf"params file {tmp_path}/cifar.yaml does not exist \(did you mean {tmp_path}/cifar10.yaml\?\)$",
    ):
        load_yaml(tmp_path / "cifar.yaml")
    with pytest.raises(ParamError, match=r"params file .*/nothing_alike.yaml does not exist$"):
        load_yaml(tmp_path / "nothing_alike.yaml")
    with pytest.raises(ParamError, match=r"params file .*/no_such_dir/cifar.yaml does not exist$"):
        load_yaml(tmp_path / "no_such_dir" / "cifar.yaml")


@pytest.mark.parametrize(
    "bad", ["../../escape", "/abs/path", "..", ".", ".hidden", "a/b", "-rf", "", "a b", "x" * (MAX_NAME + 1)]
)
def test_a_run_name_is_one_folder_name(bad):
    """Issue 29.2: --run-id ../../escape created a directory two levels above the runs root."""
    with pytest.raises(ParamError, match=r"--run-id .* is not a valid name: use 1-200 letters, digits"):
        check_name(bad, "--run-id")


def test_generated_names_are_valid_names():
    for good in ("taken", "20261206T200102Z-04a9c828-2", "quant-00-calibration_methods=minmax+entropy_seed=0"):
        assert check_name(good, "--run-id") == good
