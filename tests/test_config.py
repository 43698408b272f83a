import pytest

from dataclasses import fields

from nanodllm.config import ConfigError, TrainConfig, config_from_dict, config_to_dict, help_text, load_config


def test_file_then_flags_override(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nbatch_size = 7\nlearning_rate = 3e-4\n_private = 1\n")
    cfg = load_config([str(f), "--batch_size=9", "--compile=False", "--resume"])
    assert (cfg.batch_size, cfg.learning_rate, cfg.compile, cfg.resume) == (9, 3e-4, False, True)


def test_int_is_accepted_for_float_and_strings_need_no_quotes():
    cfg = load_config(["--learning_rate=1", "--out_dir=out/x"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float) and cfg.out_dir == "out/x"


def test_a_value_takes_the_type_of_its_key():
    cfg = load_config(["--out_dir=2024", "--data_dir=True", "--max_iters=1e2", "--warmup_iters=5.0"])
    assert (cfg.out_dir, cfg.data_dir, cfg.max_iters, cfg.warmup_iters) == ("2024", "True", 100, 5)
    assert type(cfg.max_iters) is int and type(cfg.warmup_iters) is int


def test_key_space_value_works_like_key_equals_value(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("batch_size = 7\n")
    spaced = load_config(["--max_iters", "2", "--resume", str(f), "--compile", "False", "--out_dir", "o", "--seed", "-3"])
    joined = load_config(["--max_iters=2", "--resume", str(f), "--compile=False", "--out_dir=o", "--seed=-3"])
    assert spaced == joined and (spaced.max_iters, spaced.resume, spaced.batch_size, spaced.compile) == (2, True, 7, False)
    with pytest.raises(ConfigError, match="--max_iters needs a value"):
        load_config(["--max_iters", "--resume"])


@pytest.mark.parametrize("args, words", [
    (["--bacth_size=3"], ["unknown config key 'bacth_size'", "\ndid you mean batch_size?"]),
    (["--lr=3"], ["unknown config key 'lr'", "\ndid you mean learning_rate?"]),
    (["--zzz=3"], ["unknown config key 'zzz'", "\npython train.py --help lists every key"]),
    (["--batch_size=3.5"], ["'batch_size' must be int", "3.5"]),
    (["--batch_size=True"], ["'batch_size' must be int"]),
    (["--compile=1"], ["'compile' must be bool"]),
    (["--max_iters=2.5"], ["'max_iters' must be int", "2.5"]),
    (["missing_config.py"], ["missing_config.py not found"]),
])
def test_bad_config_is_a_clear_error(args, words):
    with pytest.raises(ConfigError) as e:
        load_config(args)
    for w in words:
        assert w in str(e.value)


def test_bad_key_or_value_in_a_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("learning_rat = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat' in .*c.py\ndid you mean learning_rate\?$"):
        load_config([str(f)])
    f.write_text("out_dir = 3\n")  # a file is Python: its values keep their own types
    with pytest.raises(ConfigError, match="'out_dir' must be str"):
        load_config([str(f)])


def test_help_lists_every_key_with_its_default_and_meaning():
    lines = help_text().splitlines()
    for f in fields(TrainConfig):
        [line] = [line for line in lines if line.strip().startswith(f"--{f.name}=")]
        default, kind, meaning = line.split(maxsplit=2)[0], line.split()[1], line.split(maxsplit=2)[2]
        assert default == f"--{f.name}={f.default!r}" and kind == f.type.__name__ and meaning.strip(), line
    assert "\nsystem:" in help_text() and "--learning_rate=0.001" in help_text()


def test_dict_round_trip():
    cfg = load_config(["--batch_size=5"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict({}) == TrainConfig()
