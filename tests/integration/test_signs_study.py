"""The init study on SIGNS, 3 epochs per scheme (skipped when ../shared/data/signs is absent)."""
import pytest

from imgclf.data.manifest import make_manifests
from imgclf.studies.study import parse_init_schemes, run_study


def test_init_study_on_signs(tmp_path):
    from conftest import SIGNS

    if not (SIGNS / "train").is_dir():
        pytest.skip("../shared/data/signs is not present")
    data = tmp_path / "data"
    make_manifests(SIGNS / "train", data, test_src=SIGNS / "test", seed=230)
    summary = run_study("init", data, parse_init_schemes("zeros,xavier_uniform,he_normal"), tmp_path / "study",
                        epochs=3)
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["zeros"]["valid_acc"] <= 1 / 6 + 0.05
    assert rows["xavier_uniform"]["valid_acc"] >= 0.80 and rows["he_normal"]["valid_acc"] >= 0.80
    assert any(t.startswith("zeros:") and "symmetry never broken" in t for t in summary["readings"])
    html = (tmp_path / "study" / "report.html").read_text()
    assert html.count("<h3>Per-layer statistics") == 2 and "features.0" in html and "head.5" in html
    assert "Per-layer statistics at the end of epoch 1" in html
    assert rows["zeros"]["act_std_growth"] == 0.0 and 1 / 4 < rows["he_normal"]["act_std_growth"] < 4
