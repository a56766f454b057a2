from __future__ import annotations

import pytest
import torch

from sslvision.backbones import Backbone, build_backbone
from sslvision.errors import ConfigError


@pytest.fixture(scope="module")
def resnet18() -> Backbone:
    return build_backbone("resnet18").eval()


def test_resnet18_pooled_features_are_512_d(resnet18: Backbone) -> None:
    assert resnet18.feature_dim == 512
    with torch.no_grad():
        assert resnet18(torch.rand(2, 3, 64, 64)).shape == (2, 512)


def test_forward_features_map_at_64_px(resnet18: Backbone) -> None:
    with torch.no_grad():
        feature_map = resnet18.forward_features(torch.rand(2, 3, 64, 64))
        assert feature_map.shape == (2, 512, 2, 2)
        torch.testing.assert_close(resnet18.pool(feature_map), feature_map.mean(dim=(2, 3)))


def test_small_stem_keeps_32_px_maps_at_4x4() -> None:
    backbone = build_backbone("resnet18", small_stem=True).eval()
    assert backbone.model.conv1.kernel_size == (3, 3) and backbone.model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert backbone.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, 512, 4, 4)
        assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_timm_model_gives_pooled_features_of_feature_dim() -> None:
    backbone = build_backbone("timm:resnet10t").eval()  # random init: no download
    assert backbone.name == "timm:resnet10t" and backbone.feature_dim == 512
    with torch.no_grad():
        feature_map = backbone.forward_features(torch.rand(2, 3, 32, 32))
        assert feature_map.shape[:2] == (2, backbone.feature_dim)
        assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, backbone.feature_dim)


def test_unknown_torchvision_name_lists_resnets_and_the_timm_prefix() -> None:
    with pytest.raises(ConfigError, match="unknown torchvision backbone 'resnet19'") as info:
        build_backbone("resnet19")
    assert "resnet18" in str(info.value) and "'timm:<name>'" in str(info.value)


def test_unknown_timm_name_names_itself() -> None:
    with pytest.raises(ConfigError, match="no_such_net"):
        build_backbone("timm:no_such_net")


def test_non_resnet_torchvision_model_points_to_timm() -> None:
    with pytest.raises(
        ValueError, match="'squeezenet1_0' is not ResNet-style; use 'timm:squeezenet1_0'"
    ):
        build_backbone("squeezenet1_0")


def test_small_stem_rejects_models_without_a_resnet_stem() -> None:
    with pytest.raises(ValueError, match="small_stem is only supported for ResNet-style models"):
        build_backbone("timm:resnet10t", small_stem=True)  # deep stem: conv1 is a Sequential
