from __future__ import annotations

from pathlib import Path

import pytest

from sslvision.config import (
    Config,
    OptimConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
    to_dict,
)
from sslvision.config.views import ViewGroup
from sslvision.errors import ConfigError
from sslvision.methods.simclr import SimCLRConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("**/*.yaml"))


def test_defaults_load_with_the_default_methods_own_schema() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.optim == OptimConfig()
    assert cfg.method == SimCLRConfig()  # not the bare base class: build_method needs temperature


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "name: from-yaml\noptim:\n  base_lr: 0.1\n  name: lars\ntrain:\n  epochs: 7\n"
    )
    cfg = load_config(recipe, ["optim.base_lr=0.5", "train.batch_size=64"])
    assert cfg.name == "from-yaml"
    assert cfg.optim.name == "lars" and cfg.optim.base_lr == 0.5
    assert cfg.train.epochs == 7 and cfg.train.batch_size == 64


def test_list_index_override_after_setting_views() -> None:
    cfg = load_config(
        None,
        ["augment.views=[{count: 2, size: 32}, {count: 4, size: 16}]", "augment.views.0.blur_p=0"],
    )
    assert cfg.augment.views == [
        ViewGroup(count=2, size=32, blur_p=0.0),
        ViewGroup(count=4, size=16),
    ]
    assert isinstance(cfg.augment.views[0].blur_p, float)


def test_list_index_out_of_range_names_the_override() -> None:
    views = "augment.views=[{count: 2, size: 32}]"
    with pytest.raises(ConfigError, match=r"'augment\.views\.1' is not an index of the list"):
        load_config(None, [views, "augment.views.1.blur_p=0"])
    with pytest.raises(ConfigError, match=r"'augment\.views' expects a list"):
        load_config(None, ["augment.views.0.blur_p=0"])  # no views set yet


def test_method_section_switches_schema_on_name() -> None:
    cfg = config_from_dict({"method": {"name": "simclr", "temperature": 0.5}})
    assert isinstance(cfg.method, SimCLRConfig) and cfg.method.temperature == 0.5
    with pytest.raises(ConfigError, match=r"'method\.temprature'.*'temperature'"):
        load_config(None, ["method.temprature=0.5"])


def test_unknown_key_names_key_closest_match_and_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["optim.base_rl=0.5"])
    message = str(info.value)
    assert "'optim.base_rl'" in message
    assert "Did you mean 'base_lr'" in message
    assert "Valid keys here: name, base_lr, lr_scaling" in message


def test_unknown_top_level_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'optm'\. Did you mean 'optim'"):
        config_from_dict({"optm": {"base_lr": 1.0}})


def test_unknown_method_lists_valid_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown method\.name 'mocov9'\. Valid choices: .*simclr"
    ):
        load_config(None, ["method.name=mocov9"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", "config key 'train.epochs' expects int, got str 'abc'"),
        ("optim.base_lr=fast", "config key 'optim.base_lr' expects float, got str 'fast'"),
        ("train.epochs=1.5", "config key 'train.epochs' expects int, got float 1.5"),
        ("model.small_stem=3", "config key 'model.small_stem' expects bool, got int 3"),
        ("data=5", "config key 'data' expects a mapping"),
        ("augment.views=7", "config key 'augment.views' expects a list"),
    ],
)
def test_wrong_type_names_key_and_expected_type(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_tuple_length_errors() -> None:
    with pytest.raises(ConfigError, match=r"'optim\.betas' expects 2 values, got 1"):
        load_config(None, ["optim.betas=[0.9]"])
    with pytest.raises(ConfigError, match=r"'augment\.mean' expects 3 values, got 4"):
        load_config(None, ["augment.mean=[0.1, 0.2, 0.3, 0.4]"])


def test_tuple_items_are_converted_and_checked() -> None:
    cfg = load_config(None, ["optim.betas=[0, 1]"])
    assert cfg.optim.betas == (0.0, 1.0) and all(isinstance(b, float) for b in cfg.optim.betas)
    with pytest.raises(ConfigError, match=r"'optim\.betas\.1' expects float, got str 'x'"):
        load_config(None, ["optim.betas=[0.9, x]"])


def test_int_is_accepted_for_float() -> None:
    cfg = load_config(None, ["optim.base_lr=1", "optim.warmup_epochs=0"])
    assert cfg.optim.base_lr == 1.0 and isinstance(cfg.optim.base_lr, float)
    assert isinstance(cfg.optim.warmup_epochs, float)


def test_exponent_without_a_dot_is_a_float(tmp_path: Path) -> None:
    recipe = tmp_path / "exponent.yaml"
    recipe.write_text("optim:\n  weight_decay: 1e-6\n")  # YAML 1.1 reads this as a string
    cfg = load_config(recipe, ["optim.base_lr=5e-1"])
    assert (cfg.optim.weight_decay, cfg.optim.base_lr) == (1e-6, 0.5)


def test_bool_is_not_accepted_for_int_or_float() -> None:
    with pytest.raises(ConfigError, match=r"'train\.epochs' expects int, got bool True"):
        load_config(None, ["train.epochs=true"])
    with pytest.raises(ConfigError, match=r"'optim\.base_lr' expects float, got bool False"):
        load_config(None, ["optim.base_lr=false"])


def test_no_is_a_word_and_only_true_false_are_booleans(tmp_path: Path) -> None:
    """YAML 1.1 reads no/yes/on/off as booleans; `train.precision=no` must stay the word."""
    assert load_config(None, ["train.precision=no"]).train.precision == "no"
    recipe = tmp_path / "float32.yaml"
    recipe.write_text("train:\n  precision: no\n  progress_bar: false\n")
    cfg = load_config(recipe)
    assert (cfg.train.precision, cfg.train.progress_bar) == ("no", False)
    with pytest.raises(ConfigError, match=r"'train\.progress_bar' expects bool, got str 'off'"):
        load_config(None, ["train.progress_bar=off"])


def test_to_dict_round_trip_is_equal() -> None:
    cfg = load_config(
        None,
        ["augment.views=[{count: 2, size: 32, scale: [0.2, 1.0]}]", "method.temperature=0.3"],
    )
    data = to_dict(cfg)
    assert isinstance(data["augment"]["views"][0], dict)
    assert data["augment"]["mean"] == list(cfg.augment.mean)
    assert config_from_dict(data) == cfg


def test_config_from_dict_does_not_modify_its_input() -> None:
    data = {"optim": {"base_lr": 0.1}}
    config_from_dict(data, ["optim.base_lr=0.9"])
    assert data == {"optim": {"base_lr": 0.1}}


def test_saved_yaml_reloads_equal(tmp_path: Path) -> None:
    cfg = load_config(
        None, ["name=saved", "optim.betas=[0.8, 0.99]", "augment.views=[{count: 2, size: 24}]"]
    )
    path = tmp_path / "resolved.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_parse_overrides_reads_values_as_yaml() -> None:
    assert parse_overrides(["a=0.5", "b=true", "c=[1, 2]", "d=text", "e="]) == [
        ("a", 0.5),
        ("b", True),
        ("c", [1, 2]),
        ("d", "text"),
        ("e", ""),
    ]


@pytest.mark.parametrize("override", ["foo", "=3"])
def test_override_without_key_value_form_is_an_error(override: str) -> None:
    with pytest.raises(ConfigError, match=f"override '{override}' is not of the form key=value"):
        load_config(None, [override])


def test_override_below_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'optim\.base_lr' is a value, not a section"):
        config_from_dict({"optim": {"base_lr": 0.1}}, ["optim.base_lr.x=1"])
    with pytest.raises(ConfigError, match=r"'optim\.base_lr' expects float, got dict"):
        load_config(None, ["optim.base_lr.x=1"])


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"config file not found: {missing}"):
        load_config(missing)


def test_config_file_must_hold_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_config(path)


def test_recipes_exist() -> None:
    assert RECIPES, "no YAML recipes found under configs/"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert cfg.method.name == recipe.parent.name
    assert config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.batch_size=0", "config key 'train.batch_size' must be >= 1, got 0"),
        ("train.max_steps=-1", "config key 'train.max_steps' must be >= 0, got -1"),
        ("train.grad_accum_steps=0", "config key 'train.grad_accum_steps' must be >= 1"),
        ("train.log_every=0", "config key 'train.log_every' must be >= 1"),
        ("optim.weight_decay=-1e-4", "config key 'optim.weight_decay' must be >= 0"),
        ("optim.warmup_epochs=-1", "config key 'optim.warmup_epochs' must be >= 0"),
        ("optim.base_lr=.nan", "config key 'optim.base_lr' must be >= 0, got nan"),
        ("checkpoint.save_every_steps=-5", "config key 'checkpoint.save_every_steps' must be"),
        ("optim.name=adam", "unknown optim.name 'adam'. Valid choices: sgd, lars, adamw."),
        ("optim.lr_scaling=cubic", "unknown optim.lr_scaling 'cubic'. Valid choices: linear,"),
        ("train.precision=fp8", "unknown train.precision 'fp8'. Valid choices: no, bf16, fp16."),
        ("data.dataset=imagenet", "Valid choices: synthetic, folder, cifar10, cifar100."),
    ],
)
def test_out_of_range_values_and_unknown_choices_name_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_a_view_groups_own_check_names_the_whole_key() -> None:
    views = "augment.views=[{count: 2, size: 32}, {count: 2, size: 16}]"
    with pytest.raises(ConfigError) as info:
        load_config(None, [views, "augment.views.1.scale=[0.5, 0.2]"])
    assert str(info.value).startswith("config key 'augment.views.1.scale' must be (lo, hi) with")
    with pytest.raises(ConfigError, match=r"^ViewGroup\.hflip_p is a probability"):
        ViewGroup(hflip_p=-0.1)  # built outside a recipe it names its field
