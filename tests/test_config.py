"""vlmagent.config: strict YAML loading, dotted overrides, and every shipped config file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlmagent import config
from vlmagent.config import Config, ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- defaults
def test_no_file_gives_defaults() -> None:
    assert config.load() == Config()
    assert config.load(None, []) == Config()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "")) == Config()
    assert config.load(write(tmp_path, "# only a comment\n")) == Config()


def test_empty_section_gives_section_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "browser:\n  # nothing set\nreward:\n  structure:\n")
    assert config.load(path) == Config()


def test_defaults_round_trip_through_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(config.to_dict(Config()), sort_keys=False)
    loaded = config.load(write(tmp_path, text))
    assert loaded == Config()
    assert config.to_dict(loaded) == config.to_dict(Config())


def test_values_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
browser:
  viewport_width: 1024
  extra_args: [--lang=en-US]
reward:
  stages: [structure]
  weights: {structure: 3}
  structure: {max_files: 10}
score:
  workers: 4
""")
    cfg = config.load(path)
    assert cfg.browser.viewport_width == 1024
    assert cfg.browser.extra_args == ["--lang=en-US"]
    assert cfg.browser.viewport_height == 800  # untouched keys keep their defaults
    assert cfg.reward.stages == ["structure"]
    assert cfg.reward.weights == {"structure": 3.0}
    assert isinstance(cfg.reward.weights["structure"], float)
    assert cfg.reward.structure.max_files == 10
    assert cfg.reward.execution == config.ExecutionConfig()
    assert cfg.score.workers == 4


# ---------------------------------------------------------------- unknown keys
def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "browsr:\n  viewport_width: 100\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "'browsr'" in msg
    assert "browser" in msg  # lists the valid keys


def test_unknown_nested_key_names_dotted_path(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n  structure:\n    max_filez: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'reward\.structure\.max_filez'") as e:
        config.load(path)
    assert str(path) in str(e.value)
    assert "max_files" in str(e.value)


def test_non_string_yaml_key_is_an_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "1: a\nzz: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key '1'"):
        config.load(path)


# ---------------------------------------------------------------- types
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("browser:\n  viewport_width: wide\n", "browser.viewport_width"),
        ("browser:\n  viewport_width: 12.5\n", "browser.viewport_width"),
        ("browser:\n  nav_timeout_s: soon\n", "browser.nav_timeout_s"),
        ("browser:\n  executable: 42\n", "browser.executable"),
        ("browser:\n  viewport_width:\n", "browser.viewport_width"),
        ("browser:\n  extra_args: --foo\n", "browser.extra_args"),
        ("browser:\n  extra_args: [--foo, 3]\n", r"browser.extra_args\[1\]"),
        ("reward:\n  weights: [1, 2]\n", "reward.weights"),
        ("reward:\n  weights: {structure: high}\n", "reward.weights.structure"),
        ("reward:\n  weights: {1: 0.5}\n", "reward.weights"),
        ("reward:\n  execution:\n    screenshots: 1\n", "reward.execution.screenshots"),
        ("reward:\n  execution:\n    screenshots: 'yes please'\n", "reward.execution.screenshots"),
        ("reward: 3\n", "reward"),
        ("reward:\n  structure: [1]\n", "reward.structure"),
    ],
)
def test_wrong_type_names_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=key) as e:
        config.load(path)
    assert str(path) in str(e.value)


def test_int_accepted_for_float(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "browser:\n  nav_timeout_s: 3\n"))
    assert cfg.browser.nav_timeout_s == 3.0
    assert isinstance(cfg.browser.nav_timeout_s, float)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("browser.nav_timeout_s", "true"),  # float field
        ("browser.viewport_width", "false"),  # int field
        ("reward.weights.execution", "true"),  # float values of a dict
    ],
)
def test_bool_rejected_for_numbers(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(None, [f"{key}={value}"])


# ---------------------------------------------------------------- overrides
def test_overrides_scalars_and_nested(tmp_path: Path) -> None:
    path = write(tmp_path, "browser:\n  viewport_width: 1024\n")
    cfg = config.load(path, [
        "browser.viewport_width=640",
        "browser.nav_timeout_s=2",
        "browser.executable=/opt/chromium/chrome",
        "reward.structure.max_files=25",
        "reward.execution.screenshots=false",
        "score.workers=1",
    ])
    assert cfg.browser.viewport_width == 640  # the override wins over the file
    assert cfg.browser.nav_timeout_s == 2.0
    assert cfg.browser.executable == "/opt/chromium/chrome"
    assert cfg.reward.structure.max_files == 25
    assert cfg.reward.execution.screenshots is False
    assert cfg.score.workers == 1


def test_override_dict_entry_keeps_other_entries() -> None:
    cfg = config.load(None, ["reward.weights.execution=0.5"])
    assert cfg.reward.weights == {"structure": 1.0, "build": 1.0, "execution": 0.5,
                                  "aesthetics": 2.0}


def test_override_dict_entry_merges_with_file(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n  weights: {structure: 2, execution: 1}\n")
    cfg = config.load(path, ["reward.weights.execution=0.5", "reward.timeouts_s.structure=5"])
    assert cfg.reward.weights == {"structure": 2.0, "execution": 0.5}
    assert cfg.reward.timeouts_s["structure"] == 5.0


def test_override_lists() -> None:
    cfg = config.load(None, ["reward.stages=[structure]", "browser.extra_args=[--a, --b=1]"])
    assert cfg.reward.stages == ["structure"]
    assert cfg.browser.extra_args == ["--a", "--b=1"]


def test_override_value_may_contain_equals() -> None:
    cfg = config.load(None, ["browser.executable=/x/a=b"])
    assert cfg.browser.executable == "/x/a=b"


def test_override_into_empty_section(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n")
    cfg = config.load(path, ["reward.structure.max_files=7"])
    assert cfg.reward.structure.max_files == 7


def test_override_unknown_key_names_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'reward\.structure\.max_filez'"):
        config.load(None, ["reward.structure.max_filez=3"])


def test_override_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"score\.workers"):
        config.load(None, ["score.workers=many"])


def test_override_into_non_section_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "score:\n  workers: 2\n")
    with pytest.raises(ConfigError, match=r"score\.workers is not a section") as e:
        config.load(path, ["score.workers.max=3"])
    assert str(path) in str(e.value)
    # Overrides apply to the effective config, so a default scalar is not a section either.
    with pytest.raises(ConfigError, match=r"score\.workers is not a section"):
        config.load(None, ["score.workers.max=3"])
    with pytest.raises(ConfigError, match=r"browser\.extra_args is not a section"):
        config.load(None, ["browser.extra_args.first=--x"])
    # A section that the file replaced by a scalar is reported against the file first.
    scalar = write(tmp_path, "reward: 1\n", "scalar.yaml")
    with pytest.raises(ConfigError, match=r"key 'reward' must be|reward: expected a mapping"):
        config.load(scalar, ["reward.stages=[]"])


def test_override_errors_say_they_come_from_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "score:\n  workers: 2\n")
    with pytest.raises(ConfigError, match=r"\+ overrides: unknown key 'score\.wrokers'") as e:
        config.load(path, ["score.wrokers=3"])
    assert str(path) in str(e.value)


@pytest.mark.parametrize("bad", ["browser.viewport_width", "=3", " =3", ""])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match="key.path=value"):
        config.load(None, [bad])


def test_override_value_invalid_yaml() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(None, ["reward.stages=[unclosed"])


def test_overrides_do_not_mutate_between_loads() -> None:
    config.load(None, ["score.workers=7"])
    assert config.load().score.workers == Config().score.workers


# ---------------------------------------------------------------- bad files
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config") as e:
        config.load(path)
    assert str(path) in str(e.value)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path)


def test_binary_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ConfigError, match="cannot read config") as e:
        config.load(path)
    assert str(path) in str(e.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "browser:\n  viewport_width: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        config.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- browser\n- reward\n", "list"), ("[]\n", "list"), ("42\n", "int"),
     ("just text\n", "str"), ("false\n", "bool")],
)
def test_non_mapping_top_level(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"top level must be a mapping, got {kind}") as e:
        config.load(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------- shipped configs
def test_configs_folder_is_not_empty() -> None:
    assert CONFIGS, "configs/*.yaml: no config files found"


def _assert_file_values(raw: object, loaded: object, where: str) -> None:
    """Every value written in the YAML file is the loaded config's value at that key path
    (stage entries are partial: only the keys they set are compared)."""
    if isinstance(raw, dict):
        assert isinstance(loaded, dict), where
        for k, v in raw.items():
            assert k in loaded, f"{where}.{k}"
            _assert_file_values(v, loaded[k], f"{where}.{k}")
    elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
        assert isinstance(loaded, list) and len(loaded) == len(raw), where
        for i, (a, b) in enumerate(zip(raw, loaded)):
            _assert_file_values(a, b, f"{where}[{i}]")
    else:
        assert raw == loaded, where


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_validates_and_resolves(path: Path) -> None:
    """Loads strictly with the file's values, names a registered domain, and (when it trains)
    its stage list passes the pipeline's validation: known kinds and domains, unique names."""
    from vlmagent.domains import DOMAINS
    from vlmagent.train import TRAIN_KINDS
    from vlmagent.train.pipeline import resolve_stages

    cfg = config.load(path)
    raw = yaml.safe_load(path.read_text()) or {}
    _assert_file_values(raw, config.to_dict(cfg), path.name)
    assert cfg.domain.name in DOMAINS
    if not cfg.train.stages:
        return
    stages = resolve_stages(cfg)
    names = [s.name for s in stages]
    assert names == [s.get("name", s.get("kind")) for s in raw["train"]["stages"]]
    assert len(set(names)) == len(names)
    assert all(s.kind in TRAIN_KINDS and s.domain in DOMAINS for s in stages)
    assert all(s.steps > 0 and s.batch_size > 0 and s.lr > 0 for s in stages)


def test_the_cascade_configs_train() -> None:
    """The stage checks above are not vacuous: the cascade recipes have stage lists."""
    training = {p.name for p in CONFIGS if config.load(p).train.stages}
    assert {"zoomqa_cascade.yaml", "zoomqa_cascade_short.yaml"} <= training


@pytest.mark.parametrize("stages, message", [
    ("[{kind: ppo}]", "unknown kind 'ppo'"),
    ("[{kind: sft, domain: flying}]", "unknown domain 'flying'"),
    ("[{kind: sft}, {kind: sft}]", "two stages are named 'sft'"),
    ("[]", "train.stages is empty"),
])
def test_stage_validation_rejects_a_shipped_config_with_bad_stages(stages: str,
                                                                   message: str) -> None:
    from vlmagent.train.pipeline import resolve_stages

    path = next(p for p in CONFIGS if p.name == "zoomqa_cascade_short.yaml")
    with pytest.raises(ValueError, match=message):
        resolve_stages(config.load(path, [f"train.stages={stages}"]))


def test_score_yaml_documents_the_defaults() -> None:
    """configs/score.yaml lists the scorer defaults; keep the two in step when either changes."""
    path = Path(__file__).resolve().parents[1] / "configs" / "score.yaml"
    assert config.load(path) == Config()
