"""Low-rank adapters over frozen layers (LoRA, and FFA-LoRA's seed-frozen A).

An adapted layer computes with `W0 + (alpha / rank) * A @ B`: `W0` (kernel or embedding
table, and the bias) is the base layer's, frozen; `A` and `B` are low-rank factors and
`B` starts at zero, so an adapted layer first computes exactly its base layer. Two modes:

    "lora"  A and B are trained (and sent);
    "ffa"   A stays at its seeded initialization and is regenerated from the frozen seed
            like any frozen tensor, so only B is trained and sent (FFA-LoRA, Sun et al.,
            ICLR 2024, arXiv 2403.12313: half of LoRA's traffic).

The frozen base can be pretrained (`tff_fedpt.PretrainedWeights`) or seeded; FedPT never
sends it. For a Dense kernel of shape (n, m), A is (n, r) and B is (r, m); a Conv2D kernel
(kh, kw, c, m) is adapted as the matrix (kh * kw * c, m); an Embedding table (v, d) has
A (v, r) and B (r, d); an LSTM's kernel (n, 4u) and recurrent kernel (u, 4u) are adapted
stacked, as the (n + u, 4u) matrix its gates see.

`add_adapters(model, layers, rank=, alpha=, mode=)` returns a copy of a Keras model with
the named layers adapted (base weights copied); `merge_adapters(model)` folds every
adapter into its base and returns a plain Keras model for inference.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_fedpt.adapter_layers import MODES, LoRAConv2D, LoRADense, LoRAEmbedding, LoRALSTM
from tff_fedpt.frozen.source import short_name
from tff_fedpt.lstm import keras_lstm
from tff_fedpt.options import option

ADAPTABLE = ("Dense", "Conv2D", "Embedding", "LSTM")


@dataclasses.dataclass(frozen=True)
class AdapterOptions:
    """Low-rank adapters of a training run (every algorithm); the binaries' flags."""

    adapter_layers: Optional[str] = option(
        None,
        "Comma-separated layer names/regexes given low-rank adapters "
        "(Dense, Conv2D, Embedding, LSTM).",
    )
    adapter_rank: int = option(4, "Rank r of the adapters.")
    adapter_alpha: Optional[float] = option(None, "Adapter scale numerator alpha (default: rank).")
    adapter_mode: str = option(
        "lora",
        "lora: A and B trained; ffa: A frozen and regenerated from the seed, only B trained.",
        choices=MODES,
    )


ADAPTER_TYPES = (LoRADense, LoRAConv2D, LoRAEmbedding, LoRALSTM)


def _adapted(layer, rank, alpha, mode, a_seed):
    new = _adapted_layer(layer, rank, alpha, mode, a_seed)
    # The base keeps the original layer's initializers (fresh instances of the same class
    # and config: Keras warns when one unseeded instance draws twice), so a seeded (not
    # pretrained) frozen base is drawn as the original layer would have drawn it.
    for attr in (
        "kernel_initializer",
        "recurrent_initializer",
        "bias_initializer",
        "embeddings_initializer",
    ):
        initializer = getattr(layer, attr, None)
        if initializer is not None and hasattr(new, attr):
            setattr(new, attr, initializer.__class__.from_config(initializer.get_config()))
    return new


def _adapted_layer(layer, rank, alpha, mode, a_seed=0):
    config = layer.get_config()
    name = layer.name
    if type(layer) is tf.keras.layers.Dense:
        return LoRADense(
            config["units"],
            rank,
            alpha,
            mode,
            activation=config["activation"],
            use_bias=config["use_bias"],
            a_seed=a_seed,
            name=name,
        )
    if type(layer) is tf.keras.layers.Conv2D:
        return LoRAConv2D(config, rank, alpha, mode, a_seed=a_seed, name=name)
    if type(layer) is tf.keras.layers.Embedding:
        return LoRAEmbedding(
            config["input_dim"],
            config["output_dim"],
            rank,
            alpha,
            mode,
            mask_zero=config.get("mask_zero", False),
            a_seed=a_seed,
            name=name,
        )
    if type(layer) is tf.keras.layers.LSTM:
        plain = (
            config["activation"] == "tanh"
            and config["recurrent_activation"] == "sigmoid"
            and config["use_bias"]
            and not config["dropout"]
            and not config["recurrent_dropout"]
            and not (config["return_state"] or config["go_backwards"] or config["stateful"])
        )
        if not plain:
            raise ValueError(
                f"layer {layer.name!r}: LSTM adapters cover Keras' default LSTM (tanh, sigmoid "
                "gates, a bias, no dropout, no returned state, forwards, not stateful)."
            )
        return LoRALSTM(
            config["units"],
            rank,
            alpha,
            mode,
            return_sequences=config["return_sequences"],
            unit_forget_bias=config["unit_forget_bias"],
            a_seed=a_seed,
            name=name,
        )
    raise ValueError(
        f"layer {layer.name!r} is a {type(layer).__name__}; adapters cover {list(ADAPTABLE)}."
    )


def _clone(keras_model: tf.keras.Model, replace) -> tf.keras.Model:
    """A copy of `keras_model` with `replace(layer)` for each layer it returns one for,
    every other layer's weights copied, and the new layers' weights set by `replace`."""
    built = {}

    def clone_function(layer):
        new = replace(layer)
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        built[layer.name] = (layer, new)
        return new

    clone = tf.keras.models.clone_model(keras_model, clone_function=clone_function)
    return clone, built


def add_adapters(
    keras_model: tf.keras.Model,
    layers: str | Sequence[str],
    *,
    rank: int = 4,
    alpha: float | None = None,
    mode: str = "lora",
    seed: int = 0,
) -> tf.keras.Model:
    """A copy of `keras_model` whose named layers carry low-rank adapters.

    Every layer keeps its weights: an adapted layer's base (kernel or table, and bias)
    is the original layer's, frozen, and B starts at zero, so the copy computes exactly
    what `keras_model` computes until B is trained. (Called in graph mode, as inside a
    `model_fn` that TFF traces, the copy's layers start from their initializers: FedPT
    takes a frozen base from its source, pretrained values or the seed.)

    Args:
      keras_model: A built Sequential or functional Keras model.
      layers: Layer names or regular expressions (full match) of Dense, Conv2D,
        Embedding or LSTM layers.
      rank: The adapters' rank r (>= 1).
      alpha: The scale numerator: the update is (alpha / rank) * A @ B (default: rank,
        a scale of 1).
      mode: "lora" (A and B trained) or "ffa" (A frozen and regenerated from the seed;
        only B trained).
      seed: The k-th adapted layer (in the model's layer order, from 0) draws its A with
        `HeUniform(seed=seed + k)`: different in every layer, the same on every call. (In
        "ffa" mode inside FedPT, A is drawn from the frozen seed instead.)

    Returns:
      The adapted Keras model.

    Raises:
      ValueError: for a pattern that matches no layer or is not a regular expression, a
        layer of another type, or an invalid rank, alpha or mode.
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"layers must name at least one layer; received {layers!r}.")
    names = [layer.name for layer in keras_model.layers]
    selected = set()
    for pattern in patterns:
        try:
            hits = {n for n in names if re.fullmatch(pattern, n)}
        except re.error as e:
            raise ValueError(
                f"adapter layers: {pattern!r} is not a regular expression ({e}); name layers "
                f"(a full match): {names}."
            ) from None
        if not hits:
            raise ValueError(f"adapter layers: {pattern!r} matches no layer; layers: {names}.")
        selected |= hits

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; received {seed!r}.")
    order = {n: k for k, n in enumerate(n for n in names if n in selected)}

    def replace(layer):
        if layer.name not in selected:
            return None
        return _adapted(layer, rank, alpha, mode, int(seed) + order[layer.name])

    clone, built = _clone(keras_model, replace)
    if not tf.executing_eagerly():
        # Inside TFF's tracing (model_fn in a graph): values cannot be copied here, and
        # need not be. A frozen base comes from its source (pretrained values or the
        # seed), never from the traced model; trainable layers start from their own
        # initializers, as any model_fn's do.
        return clone
    for old, new in built.values():
        if isinstance(new, ADAPTER_TYPES):
            base = {short_name(v): v.numpy() for v in old.weights}
            for variable in new.weights:
                if short_name(variable) in base:
                    variable.assign(base[short_name(variable)])
        else:
            new.set_weights(old.get_weights())
    return clone


def merge_adapters(keras_model: tf.keras.Model) -> tf.keras.Model:
    """A plain Keras model with every adapter folded into its base layer
    (`W0 + (alpha / rank) * A @ B`): same outputs, no adapter layer, for inference."""

    def replace(layer):
        if isinstance(layer, LoRADense):
            return tf.keras.layers.Dense(
                layer.units, activation=layer.activation, use_bias=layer.use_bias, name=layer.name
            )
        if isinstance(layer, LoRAConv2D):
            return tf.keras.layers.Conv2D.from_config(layer.conv_config)
        if isinstance(layer, LoRAEmbedding):
            return tf.keras.layers.Embedding(
                layer.input_dim, layer.output_dim, mask_zero=layer.mask_zero, name=layer.name
            )
        if isinstance(layer, LoRALSTM):
            return keras_lstm(layer.units, return_sequences=layer.return_sequences, name=layer.name)
        return None

    clone, built = _clone(keras_model, replace)
    for old, new in built.values():
        if isinstance(old, LoRALSTM):
            kernel, recurrent = old._kernels()
            new.set_weights([kernel.numpy(), recurrent.numpy(), old.bias.numpy()])
        elif isinstance(old, ADAPTER_TYPES):
            base = old.embeddings if isinstance(old, LoRAEmbedding) else old.kernel
            merged = base + old.scale * tf.reshape(tf.matmul(old.lora_a, old.lora_b), base.shape)
            values = [merged.numpy()]
            if getattr(old, "bias", None) is not None:
                values.append(old.bias.numpy())
            new.set_weights(values)
        else:
            new.set_weights(old.get_weights())
    return clone
