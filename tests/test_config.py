import pytest

from rl.config import ConfigError, load_config, parse_override


def test_defaults_follow_the_recipe():
    cfg = load_config()
    assert cfg.grpo.baseline == "leave_one_out"
    assert (cfg.grpo.eps_low, cfg.grpo.eps_high) == (0.2, 0.28)
    assert cfg.grpo.is_correction.mode == "seq_mask"
    assert cfg.grpo.kl.coef == 0.0
    assert cfg.grpo.loss_aggregation == "token"
    assert cfg.grpo.overlong_filter is True


def test_overrides_are_typed():
    cfg = load_config(None, ["grpo.lr=1e-6", "run.steps=7", "grpo.std_normalize=false",
                             "environments.math.levels=[1,2]"])
    assert cfg.grpo.lr == 1e-6 and isinstance(cfg.grpo.lr, float)
    assert cfg.run.steps == 7
    assert cfg.grpo.std_normalize is False
    assert cfg.environments["math"].model_extra == {"levels": [1, 2]}


def test_a_section_given_whole_replaces_the_configs():
    """One environment of a mixed config, trained alone: the override's mapping is the new section."""
    from rl.cli import configs_dir

    mixed = load_config(configs_dir() / "grpo_mixed_tiny.yaml")
    assert set(mixed.environments) == {"math", "ifeval", "structured", "mcq"}
    alone = load_config(configs_dir() / "grpo_mixed_tiny.yaml", ["environments={math: {ratio: 1.0, levels: [1, 2, 3]}}"])
    assert set(alone.environments) == {"math"}
    assert alone.environments["math"].options == {"levels": [1, 2, 3]} and alone.environments["math"].ratio == 1.0
    assert alone.grpo == mixed.grpo and alone.model == mixed.model
    with pytest.raises(ConfigError, match="environments.math.ratio"):
        load_config(None, ["environments={math: {ratio: 0}}"])


def test_unknown_key_names_it_and_the_closest_valid_key():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["grpo.learning_rate=1e-6"])
    assert "grpo.learning_rate" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["grpo.eps_hgh=0.3"])
    assert "grpo.eps_hgh" in str(err.value) and "grpo.eps_high" in str(err.value)


def test_mistyped_value_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["run.steps=many"])
    assert "run.steps" in str(err.value) and "many" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["grpo.is_correction.mode=bogus"])
    assert "grpo.is_correction.mode" in str(err.value)
    with pytest.raises(ConfigError):
        load_config(None, ["grpo.is_correction.band_low=3"])
    with pytest.raises(ConfigError, match="eval_before_train"):
        load_config(None, ["run.eval_before_train=true"])
    assert load_config(None, ["run.eval_before_train=true", "run.eval_every=5"]).run.eval_before_train


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("grpo.lr")


def test_shipped_configs_validate():
    from rl.cli import configs_dir

    files = sorted(configs_dir().glob("*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_every_config_leaf_is_documented_where_it_is_declared():
    """A docstring right below each field that is not a section of its own."""
    import ast
    import inspect

    from pydantic import BaseModel

    import rl.config as config

    undocumented = []
    for cls in [c for c in vars(config).values() if inspect.isclass(c) and issubclass(c, config._Section)]:
        tree = ast.parse(inspect.getsource(cls)).body[0]
        for i, node in enumerate(tree.body):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            annotation = cls.model_fields[node.target.id].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel) or node.target.id == "environments":
                continue  # a section: its class says what it is
            following = tree.body[i + 1] if i + 1 < len(tree.body) else None
            if not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                undocumented.append(f"{cls.__name__}.{node.target.id}")
    assert not undocumented, undocumented
