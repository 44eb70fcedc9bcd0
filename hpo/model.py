"""The CNN that every trial trains, built from a trial's parameters.

Only ``keras.*`` is used here, so the same model runs on TensorFlow (the default), JAX or
PyTorch backends. Preprocessing (augmentation and the 0-255 -> 0-1 scaling) lives *inside*
the model: an exported model takes the uint8 pixels that ``hpo.data.decode_image`` makes,
so training and prediction can never disagree about scaling.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import layers, regularizers

CONV_BLOCK_PREFIX = "block"  # feature maps are read from the "blockN_act" layers


def build_model(params: Mapping[str, Any], num_classes: int, image_size: int,
                augment: bool = True) -> keras.Model:
    """N conv blocks (conv, batch norm, activation, pooling; filters doubling), then a head.

    Two classes get one sigmoid unit, more classes a softmax, which is what the loss in
    ``hpo.training`` expects.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    l2 = regularizers.L2(float(params["l2"]))
    activation = str(params["activation"])

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    if augment:  # active only in training; a no-op at inference and in the exported model
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
        x = layers.RandomRotation(0.05, fill_mode="nearest", name="aug_rotate")(x)
        x = layers.RandomZoom(0.1, fill_mode="nearest", name="aug_zoom")(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)

    filters = int(params["filters"])
    for block in range(1, int(params["conv_blocks"]) + 1):
        name = f"{CONV_BLOCK_PREFIX}{block}"
        x = layers.Conv2D(filters * 2 ** (block - 1), 3, padding="same", use_bias=False,
                          kernel_regularizer=l2, name=f"{name}_conv")(x)
        # momentum 0.9, not Keras' 0.99: small datasets give few steps per epoch, and the
        # slow default leaves inference statistics (hence val accuracy) near chance for epochs
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        x = layers.Activation(activation, name=f"{name}_act")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)

    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(float(params["dropout"]), name="dropout")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", kernel_regularizer=l2, name="head",
                               dtype="float32")(x)  # float32 under mixed precision too
    else:
        outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=l2,
                               name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="hpo_cnn")


def conv_block_outputs(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are the feature maps of each conv block, in order."""
    return [layer.name for layer in model.layers
            if layer.name.startswith(CONV_BLOCK_PREFIX) and layer.name.endswith("_act")]
