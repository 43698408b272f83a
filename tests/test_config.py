import pytest

from nanodllm.config import ConfigError, TrainConfig, config_from_dict, config_to_dict, load_config


def test_file_then_flags_override(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nbatch_size = 7\nlearning_rate = 3e-4\n_private = 1\n")
    cfg = load_config([str(f), "--batch_size=9", "--compile=False", "--resume"])
    assert (cfg.batch_size, cfg.learning_rate, cfg.compile, cfg.resume) == (9, 3e-4, False, True)


def test_int_is_accepted_for_float_and_strings_need_no_quotes():
    cfg = load_config(["--learning_rate=1", "--out_dir=out/x"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float) and cfg.out_dir == "out/x"


@pytest.mark.parametrize("args, words", [
    (["--bacth_size=3"], ["unknown config key 'bacth_size'", "batch_size (int"]),
    (["--batch_size=3.5"], ["'batch_size' must be int", "3.5"]),
    (["--batch_size=True"], ["'batch_size' must be int"]),
    (["--compile=1"], ["'compile' must be bool"]),
    (["--out_dir=3"], ["'out_dir' must be str"]),
    (["missing_config.py"], ["missing_config.py not found"]),
])
def test_bad_config_is_a_clear_error(args, words):
    with pytest.raises(ConfigError) as e:
        load_config(args)
    for w in words:
        assert w in str(e.value)


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("lr = 0.1\n")
    with pytest.raises(ConfigError, match=r"(?s)unknown config key 'lr'.*valid keys:.*learning_rate"):
        load_config([str(f)])


def test_dict_round_trip():
    cfg = load_config(["--batch_size=5"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict({}) == TrainConfig()
