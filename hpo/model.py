"""The CNN that every trial trains, built from a trial's parameters.

Three families share one skeleton (N blocks, each ending in a 2x2 max pooling, widths
``filters * growth ** (block - 1)``, then global average pooling, an optional dense layer and
the head), so a search can move between them with the same other parameters:

* ``plain``: conv, batch norm, activation, pool (the stack of Chollet's 1st ed. §5.2).
* ``residual``: two 3x3 convs with a shortcut added before the block's activation; a 1x1
  projection (conv + batch norm) where the width changes (ResNet v1 basic block).
* ``separable``: the residual block with depthwise-separable convs (Xception's entry flow);
  the first conv of the network stays a full conv, as in Xception, because a separable conv
  over 3 RGB channels saves nothing and ``hpo explain`` draws that layer's RGB filters.

Besides the training-only augmentation (:mod:`hpo.augment`, which ``export-best`` drops),
only built-in ``keras.*`` layers are used, so an exported ``model.keras`` loads with
``safe_mode=True`` and the same model runs on TensorFlow (the default), JAX or PyTorch.
Preprocessing (augmentation and the 0-255 -> 0-1 scaling) lives *inside* the model: an
exported model takes the uint8 pixels that ``hpo.data.decode_image`` makes, so training and
prediction can never disagree about scaling.

Every block names its conv ``blockN_conv`` and its output activation ``blockN_act`` (inner
ones ``blockN_act1``): that is how ``hpo explain`` finds the first filters and each block's
feature maps, whatever the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers, regularizers

from hpo.augment import RandomFlipZoomShift
from hpo.errors import HpoError
from hpo.head import head_activation, head_units
from hpo.space import BLOCKS

CONV_BLOCK_PREFIX = "block"  # feature maps are read from the "blockN_act" layers
# momentum 0.9, not Keras' 0.99: small datasets give few steps per epoch, and the slow default
# leaves inference statistics (hence val accuracy) near chance for epochs
BN_MOMENTUM = 0.9


def block_widths(params: Mapping[str, Any]) -> list[int]:
    """Filters of each block: the first block's width, multiplied by ``growth`` per block."""
    first, growth = int(params["filters"]), float(params.get("growth", 2.0))
    return [max(1, int(round(first * growth**b))) for b in range(int(params["conv_blocks"]))]


def build_model(
    params: Mapping[str, Any], num_classes: int, image_size: int, augment: bool = True
) -> keras.Model:
    """The ``params["block"]`` family (default ``plain``) of ``conv_blocks`` blocks, then a
    head as :mod:`hpo.head` defines it (one sigmoid unit for two classes, else a softmax)."""
    if num_classes < 2:
        raise HpoError(f"a classifier needs at least 2 classes, got {num_classes}")
    family = str(params.get("block", "plain"))
    if family not in BLOCKS:
        raise HpoError(f"unknown block family {family!r} (expected: {', '.join(BLOCKS)})")
    l2 = regularizers.L2(float(params["l2"]))
    activation = str(params["activation"])

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    if augment:  # active only in training; a no-op at inference and in the exported model
        x = RandomFlipZoomShift(zoom=0.1, shift=0.1, name="augment")(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)

    for block, width in enumerate(block_widths(params), start=1):
        name = f"{CONV_BLOCK_PREFIX}{block}"
        if family == "plain":
            x = _conv_bn(x, layers.Conv2D, width, l2, f"{name}_conv", f"{name}_bn")
        else:
            x = _residual_block(
                x, width, l2, activation, name, separable=family == "separable", stem=block == 1
            )
        x = layers.Activation(activation, name=f"{name}_act")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)

    x = layers.GlobalAveragePooling2D(name="gap")(x)
    units = int(params.get("dense_units", 0))
    if units:
        x = layers.Dense(units, activation=activation, kernel_regularizer=l2, name="dense")(x)
    x = layers.Dropout(float(params["dropout"]), name="dropout")(x)
    outputs = layers.Dense(
        head_units(num_classes),
        activation=head_activation(num_classes),
        kernel_regularizer=l2,
        name="head",
        dtype="float32",  # float32 under mixed precision too
    )(x)
    return keras.Model(inputs, outputs, name="hpo_cnn")


def _conv_bn(
    x: Any,
    conv: type,
    width: int,
    l2: regularizers.Regularizer,
    conv_name: str,
    bn_name: str,
    kernel: int = 3,
) -> Any:
    """A bias-free conv (batch norm supplies the shift) followed by batch norm."""
    reg = (
        {"depthwise_regularizer": l2, "pointwise_regularizer": l2}
        if conv is layers.SeparableConv2D
        else {"kernel_regularizer": l2}
    )
    x = conv(width, kernel, padding="same", use_bias=False, name=conv_name, **reg)(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=bn_name)(x)


def _residual_block(
    x: Any,
    width: int,
    l2: regularizers.Regularizer,
    activation: str,
    name: str,
    *,
    separable: bool,
    stem: bool,
) -> Any:
    """conv-bn-act-conv-bn plus the shortcut, before the block's activation. The shortcut is
    the input itself when the width is unchanged, else a 1x1 projection; the pooling after
    the activation halves both paths at once, so only the width can differ here. In a
    separable network the ``stem`` block's first conv (over the RGB image) stays a full one."""
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    y = _conv_bn(x, layers.Conv2D if stem else conv, width, l2, f"{name}_conv", f"{name}_bn")
    y = layers.Activation(activation, name=f"{name}_act1")(y)
    y = _conv_bn(y, conv, width, l2, f"{name}_conv2", f"{name}_bn2")
    shortcut = x
    if x.shape[-1] != width:
        shortcut = _conv_bn(
            x, layers.Conv2D, width, l2, f"{name}_proj", f"{name}_proj_bn", kernel=1
        )
    return layers.Add(name=f"{name}_add")([y, shortcut])


def conv_block_outputs(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are the feature maps of each conv block, in order."""
    return [
        layer.name
        for layer in model.layers
        if layer.name.startswith(CONV_BLOCK_PREFIX) and layer.name.endswith("_act")
    ]
