"""`validate` and `manifest --dedupe` on the real SIGNS data: the findings its SOURCE.md lists."""
import hashlib
import re
from collections import defaultdict
from pathlib import Path

import pytest

from imgclf.data.manifest import find_images, make_manifests
from imgclf.data.validate import validate

pytestmark = pytest.mark.integration

SIGNS = Path(__file__).resolve().parents[3] / "shared" / "data" / "signs"  # /work/shared/data/signs

# SOURCE.md, "Known issues": the test images with a byte-identical copy in train/.
LEAKING_TEST_IDS = {"5969", "5975", "5976", "5980", "6237", "6240", "6250", "6252", "6253", "6276", "6278", "6280"}


@pytest.fixture(scope="module")
def signs() -> Path:
    if not (SIGNS / "train").is_dir() or not (SIGNS / "test").is_dir():
        pytest.skip(f"{SIGNS} is not present")
    return SIGNS


@pytest.fixture(scope="module")
def report(signs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("signs") / "data"
    make_manifests(signs / "train", out, test_src=signs / "test")
    return validate(out)


def _id(path: str) -> str:
    """'…/0_IMG_5975 (1).jpg' → '5975'."""
    return re.fullmatch(r"\d_IMG_(\d+)(?: \(1\))?\.jpg", Path(path).name).group(1)


def test_reports_exactly_the_known_test_leaks(report):
    test_leaks = [x for x in report["leaks"] if x["split"] == "test"]
    assert len(test_leaks) == 12  # one entry per leaking test image
    assert {_id(x["path"]) for x in test_leaks} == LEAKING_TEST_IDS
    # each copy is the same photo (same id) in train or valid, never another test file
    assert all(c["split"] in ("train", "valid") and _id(c["path"]) == _id(x["path"])
               for x in test_leaks for c in x["copies"])
    assert report["errors"] == []
    assert report["sizes"] == {"64x64": 1200} and report["modes"] == {"RGB": 1200}


def test_pixel_groups_are_the_byte_identical_groups(signs, report):
    """SOURCE.md counts 56 groups of byte-identical files; no two files with other bytes decode
    to the same pixels here, so the decoded-pixel groups are exactly those 56."""
    by_bytes = defaultdict(list)
    for p in find_images(signs):
        by_bytes[hashlib.sha256(p.read_bytes()).hexdigest()].append(str(p.resolve()))
    byte_groups = {frozenset(g) for g in by_bytes.values() if len(g) > 1}
    pixel_groups = {frozenset(f["path"] for f in g["files"]) for g in report["duplicates"]}
    assert len(byte_groups) == 56
    assert pixel_groups == byte_groups


def test_dedupe_keeps_each_distinct_image_once(signs, tmp_path):
    # SOURCE.md: 1,037 distinct images in train/, 119 in test/, 12 of those also in train/.
    summary = make_manifests(signs / "train", tmp_path / "data", test_src=signs / "test", dedupe=True)
    assert (summary["train"] + summary["valid"], summary["test"]) == (1037, 119 - 12)
    r = validate(tmp_path / "data")
    assert r["duplicates"] == [] and r["leaks"] == [] and r["errors"] == []
