"""Encoders: pre-trained or self-supervised backbones that turn images into features.

See :mod:`alcore.encoders.core` for the API, :mod:`alcore.encoders.cifar_resnet` for our own
CIFAR-10 ResNets and :mod:`alcore.encoders.pretrained` for the ImageNet weights that installed
packages ship (offline). timm is imported only when a timm model is asked for.
"""

from alcore.encoders.core import (
    ARCHS,
    ArchSpec,
    Encoder,
    EncoderConfig,
    FeatureLevel,
    create_encoder,
    encoder_from_config,
    load_classifier_head,
    load_encoder,
    read_encoder_config,
    read_state_dict,
    save_encoder,
)
from alcore.encoders.pretrained import OFFLINE_WEIGHTS, PackageWeights, read_package_weights

__all__ = [
    "ARCHS",
    "ArchSpec",
    "Encoder",
    "EncoderConfig",
    "FeatureLevel",
    "create_encoder",
    "encoder_from_config",
    "load_classifier_head",
    "load_encoder",
    "OFFLINE_WEIGHTS",
    "PackageWeights",
    "read_package_weights",
    "read_encoder_config",
    "read_state_dict",
    "save_encoder",
]
