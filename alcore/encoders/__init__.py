"""Encoders: pre-trained or self-supervised backbones that turn images into features.

See :mod:`alcore.encoders.core` for the API and :mod:`alcore.encoders.cifar_resnet` for our own
CIFAR-10 ResNets. timm is imported only when a timm model is asked for.
"""

from alcore.encoders.core import (
    ARCHS,
    ArchSpec,
    Encoder,
    EncoderConfig,
    create_encoder,
    encoder_from_config,
    load_classifier_head,
    load_encoder,
    read_state_dict,
    save_encoder,
)

__all__ = [
    "ARCHS",
    "ArchSpec",
    "Encoder",
    "EncoderConfig",
    "create_encoder",
    "encoder_from_config",
    "load_classifier_head",
    "load_encoder",
    "read_state_dict",
    "save_encoder",
]
