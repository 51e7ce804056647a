"""The ablation harness: AUROC, paired bootstrap, leave-one-out selection, map cache."""

from __future__ import annotations

import ast
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from structcore.research import ablation as ab


def test_auroc_matrix_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=60)
    s = np.round(rng.normal(size=(60, 3)) + y[:, None], 1)  # many ties
    got = ab.auroc_matrix(y, s)
    for j in range(3):
        assert got[j] == pytest.approx(roc_auc_score(y, s[:, j]))
    with pytest.raises(ValueError, match="both classes"):
        ab.auroc_matrix(np.zeros(5), s[:5])


def test_paired_bootstrap_identical_scores_have_zero_interval() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(30), np.ones(20)]
    s = rng.normal(size=50) + y
    out = ab.paired_bootstrap(y, {"max": s, "same": 3.0 * s + 1.0}, resamples=200, seed=0)
    assert out["same"]["delta"] == 0.0
    assert out["same"]["lo"] == 0.0 and out["same"]["hi"] == 0.0
    assert out["max"]["auroc"] == pytest.approx(roc_auc_score(y, s))


def test_paired_bootstrap_detects_a_better_score_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(60), np.ones(60)]
    good = rng.normal(size=120) + 2.0 * y
    weak = good + rng.normal(scale=3.0, size=120)
    a = ab.paired_bootstrap(y, {"max": weak, "better": good}, resamples=500, seed=7)
    b = ab.paired_bootstrap(y, {"max": weak, "better": good}, resamples=500, seed=7)
    assert a == b
    r = a["better"]
    assert r["delta"] > 0 and r["lo"] > 0 and r["lo"] <= r["delta"] <= r["hi"]
    assert r["p_le0"] < 0.05
    with pytest.raises(ValueError, match="reference"):
        ab.paired_bootstrap(y, {"x": good})


def test_select_leave_one_out_never_looks_at_the_held_out_set() -> None:
    deltas = {
        "a/bb": {"max": 0.0, "v1": 0.02, "v2": 0.01},
        "b/bb": {"max": 0.0, "v1": 0.03, "v2": 0.01},
        "c/bb": {"max": 0.0, "v1": -0.5, "v2": 0.01},  # v1 collapses here
    }
    groups = {k: k.split("/")[0] for k in deltas}
    sel = ab.select_leave_one_out(deltas, groups, candidates=["max", "v1", "v2"])
    assert sel["c/bb"]["variant"] == "v1"  # chosen on a, b: the loss on c shows as held-out
    assert sel["c/bb"]["held_out_delta"] == -0.5
    assert sel["a/bb"]["variant"] == "v2"  # v1 fails the tolerance on c
    mm = ab.select_leave_one_out(deltas, groups, rule="minimax")
    assert mm["a/bb"]["variant"] == "v2"  # worst delta on b and c: v2 +0.01 beats max 0
    # changing the held-out set's own numbers never changes its choice
    deltas["c/bb"] = {"max": 0.0, "v1": 0.9, "v2": -0.9}
    assert ab.select_leave_one_out(deltas, groups)["c/bb"]["variant"] == "v1"
    mm = ab.select_leave_one_out(deltas, groups, rule="minimax")
    assert mm["a/bb"]["variant"] == "v1"  # worst on b, c (c changed): v1 +0.03
    with pytest.raises(ValueError, match="rule"):
        ab.select_leave_one_out(deltas, groups, rule="best")


def test_report_tables_and_selection() -> None:
    res = {}
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(20), np.ones(20)]
    for key in ("s1/m", "s2/m", "mtd/m"):
        s = rng.normal(size=40) + y
        res[key] = ab.paired_bootstrap(y, {"max": s, "v": s + rng.normal(size=40)}, resamples=50)
    rep = ab.report(res)
    assert "| v |" in rep["markdown"]
    assert set(rep["selection"]["tolerance"]) == {"s1/m", "s2/m"}
    assert set(rep["selection"]["minimax"]) == {"s1/m", "s2/m"}


def test_config_hash_is_stable_and_sensitive() -> None:
    c = ab.MapConfig("mobilenet_v2")
    assert ab.config_hash(c.feature_part(), ["a"]) == ab.config_hash(c.feature_part(), ["a"])
    assert ab.config_hash(c.feature_part(), ["a"]) != ab.config_hash(c.feature_part(), ["b"])
    assert ab.config_hash({"x": Path("p")}) == ab.config_hash({"x": "p"})


def test_map_cache_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    imgs = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        from PIL import Image

        Image.fromarray(rng.integers(90, 160, size=(40, 40, 3), dtype=np.uint8)).save(p)
        imgs.append(p)
    cfg = ab.MapConfig("resnet18", resize=32, crop=32, dim=16, folds=2, coreset_ratio=0.5)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError):
        ab.load_or_compute_maps(
            "t", imgs[:4], imgs[4:], [0, 1], ["good", "x"], cfg, cache, compute=False
        )
    # weights=None: a random backbone (no download); MapConfig has no weights field, so
    # patch the extractor default through the FeatureExtractor class used by the module.
    import structcore.features as feat

    orig = feat.FeatureExtractor.__init__

    def init(self, backbone, layers=None, weights="default", *args, **kwargs):
        orig(self, backbone, layers, None, *args, **kwargs)

    feat.FeatureExtractor.__init__ = init  # type: ignore[method-assign]
    try:
        ms = ab.load_or_compute_maps("t", imgs[:4], imgs[4:], [0, 1], ["good", "x"], cfg, cache)
    finally:
        feat.FeatureExtractor.__init__ = orig  # type: ignore[method-assign]
    assert ms.test_maps.shape == (2, 32, 32)
    assert ms.cal_maps["crossfit"].shape == (4, 32, 32)
    assert set(ms.folds.tolist()) == {0, 1}
    assert len(list(cache.glob("maps__*.npz"))) == 1
    again = ab.load_or_compute_maps(
        "t", imgs[:4], imgs[4:], [0, 1], ["good", "x"], cfg, cache, compute=False
    )
    np.testing.assert_array_equal(again.test_maps, ms.test_maps)
    np.testing.assert_array_equal(again.cal_maps["train"], ms.cal_maps["train"])
    np.testing.assert_array_equal(again.test_max, ms.test_max)
    # the cached maps equal what the detector computes: test max = max of the test maps
    np.testing.assert_allclose(ms.test_max, ms.test_maps.reshape(2, -1).max(axis=1))
    # ... and exactly what Detector.fit / predict compute on the same images
    from structcore import Detector

    det = Detector(**asdict(cfg), weights=None, crossfit_bank="coreset").fit(imgs[:4])
    pred = det.predict(imgs[4:])
    np.testing.assert_array_equal(ms.test_maps, pred.maps)
    np.testing.assert_array_equal(ms.test_max, pred.score_max)
    for mode in ("crossfit", "train"):
        np.testing.assert_array_equal(ms.cal_max[mode], det.train_max_[mode])
    np.testing.assert_array_equal(ms.cal_maps["train"], det.predict(imgs[:4]).maps)
    np.testing.assert_array_equal(ms.folds, det.crossfit_folds(4))
    # the cross-fit maps come from the cached fold banks: the same as the detector's own
    cf_maps, cf_max = det.calibration_maps(det.features(imgs[:4]), "crossfit")
    np.testing.assert_array_equal(ms.cal_maps["crossfit"], cf_maps)
    np.testing.assert_array_equal(ms.cal_max["crossfit"], cf_max)
    fb = ab.fold_banks_path("t", imgs[:4], imgs[4:], cfg, cache)
    assert fb.is_file()
    with np.load(fb) as z:
        assert sorted(z.files) == ["bank0", "bank1"]
    # crossfit=False: same-train maps only, from the cached features and bank, own file
    feat.FeatureExtractor.__init__ = init  # type: ignore[method-assign]
    try:
        nocf = ab.load_or_compute_maps(
            "t", imgs[:4], imgs[4:], [0, 1], ["good", "x"], cfg, cache, crossfit=False
        )
    finally:
        feat.FeatureExtractor.__init__ = orig  # type: ignore[method-assign]
    assert set(nocf.cal_maps) == {"train"} and set(nocf.cal_max) == {"train"}
    assert nocf.meta["timings_s"].get("bank_cached") == 1.0
    np.testing.assert_array_equal(nocf.test_maps, ms.test_maps)
    np.testing.assert_array_equal(nocf.cal_maps["train"], ms.cal_maps["train"])
    assert len(list(cache.glob("maps_nocf__*.npz"))) == 1
    again = ab.load_or_compute_maps(
        "t", imgs[:4], imgs[4:], [0, 1], ["good", "x"], cfg, cache, compute=False, crossfit=False
    )
    np.testing.assert_array_equal(again.cal_maps["train"], ms.cal_maps["train"])


def test_map_config_fields_are_detector_parameters() -> None:
    from structcore import Detector

    assert set(asdict(ab.MapConfig("resnet18"))) <= set(Detector().get_params())


def test_ablation_uses_only_public_detector_api() -> None:
    # No private attribute access (``x._name``) and no assignment to an attribute of another
    # object (``det.bank_ = ...``): the harness drives the detector through its public API.
    src = Path(ab.__file__).read_text(encoding="utf-8")
    private, stores = [], []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                private.append(f"{ast.unparse(node)} (line {node.lineno})")
            if isinstance(node.ctx, ast.Store):
                stores.append(f"{ast.unparse(node)} (line {node.lineno})")
    assert private == [] and stores == []


def test_masked_harness_equals_product_synthetic_calibration(tmp_path: Path) -> None:
    # --crossfit-bank masked: the harness's learned/cp+perlin is what
    # Detector(calibration="synthetic") (default crossfit_bank="masked") scores.
    from PIL import Image

    from structcore import Detector
    from structcore.research import variants
    from structcore.research.synthetic_defects import load_or_compute_synthetic_maps

    rng = np.random.default_rng(5)
    imgs = []
    for i in range(10):
        p = tmp_path / f"img{i}.png"
        base = rng.integers(80, 170, size=(12, 12, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((6, 6, 1), dtype=np.uint8))  # 72 x 72 blocks
        img = np.clip(img + rng.integers(-10, 11, size=img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(p)
        imgs.append(p)
    train, test = imgs[:7], imgs[7:]
    labels, defects = [0, 1, 1], ["good", "x", "x"]
    cfg = ab.MapConfig("resnet18", resize=64, crop=64, dim=16, folds=3, coreset_ratio=0.3)
    cache = tmp_path / "cache"
    import structcore.features as feat

    orig = feat.FeatureExtractor.__init__

    def init(self, backbone, layers=None, weights="default", *args, **kwargs):
        orig(self, backbone, layers, None, *args, **kwargs)

    feat.FeatureExtractor.__init__ = init  # type: ignore[method-assign]
    try:
        ms = ab.load_or_compute_maps(
            "t", train, test, labels, defects, cfg, cache, crossfit_bank="masked"
        )
        syn = load_or_compute_synthetic_maps("t", train, test, cfg, cache, crossfit_bank="masked")
    finally:
        feat.FeatureExtractor.__init__ = orig  # type: ignore[method-assign]
    assert len(list(cache.glob("maps_masked__*.npz"))) == 1
    assert not list(cache.glob("foldbanks__*.npz"))  # no fresh fold coresets
    models: dict = {}
    got = variants.score_variants(
        ms, names=["learned/cp+perlin"], synthetic=syn, models=models, threads=1
    )["learned/cp+perlin"]

    det = Detector(**asdict(cfg), weights=None, calibration="synthetic").fit(train)
    assert det.crossfit_bank == "masked"
    pred = det.predict(test)
    np.testing.assert_array_equal(ms.test_max, pred.score_max)
    np.testing.assert_array_equal(ms.cal_max["crossfit"], det.train_max_["crossfit"])
    prod = np.isin(syn.maker, ["cutpaste", "perlin"])
    np.testing.assert_array_equal(syn.max[prod], det.synthetic_max_)
    np.testing.assert_array_equal(syn.source[prod], det.synthetic_sources_)
    model = models["learned/cp+perlin"]
    assert not model.fallback  # a real learned score, not max pooling
    np.testing.assert_allclose(model.a, det.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got, pred.score, rtol=1e-12, atol=1e-12)
    assert np.abs(got - pred.score_max).max() > 1e-3  # and it differs from max pooling
    # the cache gives the same maps again (no compute)
    again = load_or_compute_synthetic_maps(
        "t", train, test, cfg, cache, crossfit_bank="masked", compute=False
    )
    np.testing.assert_array_equal(again.max, syn.max)
    np.testing.assert_array_equal(again.maker, syn.maker)


def test_held_out_goal_over_real_families() -> None:
    from structcore.research.ablation import held_out_goal

    sel = {
        "bottle": {"held_out_mean": 0.02, "held_out_min": 0.0},
        "mtd": {"held_out_mean": 0.01, "held_out_min": -0.004},
        "synthetic": {"held_out_mean": -0.5, "held_out_min": -0.9},  # excluded
    }
    summary, line = held_out_goal(sel, "tolerance")
    assert summary == {"mean_real": pytest.approx(0.015), "worst_real": -0.004, "met": True}
    assert line == (
        "\nheld-out (tolerance), real families: mean +0.0150, worst set -0.0040; "
        "goal (worst >= -0.005, mean >= +0.01) MET"
    )
    sel["mtd"]["held_out_min"] = -0.006  # one set below the tolerance
    assert held_out_goal(sel, "minimax")[0]["met"] is False
    assert held_out_goal({"synthetic": sel["synthetic"]}, "tolerance") is None


def test_split_maps_unpack_a_dataset_split(monkeypatch) -> None:
    """load_or_compute_split_maps hands load_or_compute_maps the split's train paths and its
    test images, labels and defect names, in test order, with the keyword arguments."""
    from types import SimpleNamespace

    from structcore.research import ablation as ab

    seen = {}
    monkeypatch.setattr(ab, "load_or_compute_maps", lambda *a, **k: seen.update(a=a, k=k))
    test = [SimpleNamespace(image=f"t{i}.png", label=i % 2, defect=f"d{i}") for i in range(3)]
    split = SimpleNamespace(train=["a.png", "b.png"], test=test)
    ab.load_or_compute_split_maps("s", split, "cfg", "cache", compute=False)
    assert seen["a"] == (
        "s",
        ["a.png", "b.png"],
        ["t0.png", "t1.png", "t2.png"],
        [0, 1, 0],
        ["d0", "d1", "d2"],
        "cfg",
        "cache",
    )
    assert seen["k"] == {"compute": False}
