import json

import pytest

from imgclf.config import Config, load_config, parse_set
from imgclf.errors import ImgclfError


def test_defaults_are_xavier_with_l2_and_dropout():
    cfg = Config()
    assert cfg.init == "xavier_uniform" and cfg.weight_decay > 0 and 0 < cfg.dropout_rate < 1


def test_cs230_params_json_loads(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 10, "dropout_rate": 0.8,
                             "num_channels": 32, "save_summary_steps": 100, "num_workers": 4}))
    cfg = load_config(p)
    assert (cfg.learning_rate, cfg.batch_size, cfg.num_epochs, cfg.dropout_rate, cfg.num_channels) == \
        (1e-3, 32, 10, 0.8, 32)


def test_set_overrides_file_and_aliases(tmp_path):
    p = tmp_path / "params.json"
    p.write_text('{"learning_rate": 0.1}')
    cfg = load_config(p, parse_set(["lr=0.01", "epochs=3", "model=mlp", "hidden_units=[64]"]))
    assert (cfg.learning_rate, cfg.num_epochs, cfg.model, cfg.hidden_units) == (0.01, 3, "mlp", [64])


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ImgclfError) as e:
        load_config(overrides={"learnin_rate": 0.1})
    assert "learnin_rate" in str(e.value) and "learning_rate" in str(e.value) and "batch_size" in str(e.value)


@pytest.mark.parametrize("key,value", [("batch_size", "many"), ("dropout_rate", 1.5), ("init", "glorot"),
                                       ("model", "resnet"), ("channels", 2)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ImgclfError, match=key):
        load_config(overrides={key: value})


def test_bad_json_file_names_the_line(tmp_path):
    p = tmp_path / "params.json"
    p.write_text('{\n "learning_rate": 0.1,\n}')
    with pytest.raises(ImgclfError, match="line 3"):
        load_config(p)


def test_readme_documents_every_config_key():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [k for k in Config.model_fields if f"| `{k}` |" not in readme]
    assert not missing, f"README's config table lacks {missing}"
