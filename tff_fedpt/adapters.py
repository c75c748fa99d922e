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

from tff_fedpt.frozen.source import short_name
from tff_fedpt.options import option

MODES = ("lora", "ffa")
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


def _factor_initializer(seed_offset: int):
    # He-uniform, as PyTorch's nn.Linear (and PEFT's LoRA A) draw theirs; a Keras class
    # the seeded generator reproduces (`frozen.FrozenInitializer`).
    return tf.keras.initializers.HeUniform(seed=seed_offset)


class _Adapter:
    """What the three adapted layer types share: the factors, the scale, the modes."""

    #: Weights that a freeze never takes from pretrained values: in "ffa" mode the
    #: factor A is regenerated from the frozen seed (read by `tff_fedpt.from_keras_model`).
    seeded_weights: tuple[str, ...] = ()
    #: Non-trainable weights that belong to the adapter's design (not Keras state).
    frozen_by_design = True

    def _init_adapter(self, rank, alpha, mode, a_seed=0):
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1; received {rank!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0; received {alpha!r}.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; received {mode!r}.")
        self.rank, self.alpha, self.mode = int(rank), float(alpha), mode
        self.seeded_weights = ("lora_a",) if mode == "ffa" else ()
        self.a_seed = int(a_seed)
        self.lora_a_initializer = _factor_initializer(self.a_seed)
        self.lora_b_initializer = tf.keras.initializers.Zeros()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def _add_factors(self, rows: int, cols: int):
        self.lora_a = self.add_weight(
            "lora_a",
            shape=(rows, self.rank),
            initializer=self.lora_a_initializer,
            trainable=self.mode == "lora",
        )
        self.lora_b = self.add_weight(
            "lora_b", shape=(self.rank, cols), initializer=self.lora_b_initializer
        )

    def _adapter_config(self):
        return {"rank": self.rank, "alpha": self.alpha, "mode": self.mode, "a_seed": self.a_seed}


class LoRADense(_Adapter, tf.keras.layers.Layer):
    """A Dense layer with a frozen kernel and bias plus a low-rank update."""

    def __init__(
        self,
        units,
        rank=4,
        alpha=None,
        mode="lora",
        activation=None,
        use_bias=True,
        a_seed=0,
        **kw,
    ):
        super().__init__(**kw)
        self.units = int(units)
        self.activation = tf.keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = tf.keras.initializers.GlorotUniform()
        self.bias_initializer = tf.keras.initializers.Zeros()
        self._init_adapter(rank, rank if alpha is None else alpha, mode, a_seed)

    def build(self, input_shape):
        n = int(input_shape[-1])
        self.kernel = self.add_weight(
            "kernel", shape=(n, self.units), initializer=self.kernel_initializer, trainable=False
        )
        self.bias = (
            self.add_weight(
                "bias", shape=(self.units,), initializer=self.bias_initializer, trainable=False
            )
            if self.use_bias
            else None
        )
        self._add_factors(n, self.units)
        super().build(input_shape)

    def call(self, inputs):
        out = tf.matmul(inputs, self.kernel)
        out += self.scale * tf.matmul(tf.matmul(inputs, self.lora_a), self.lora_b)
        if self.bias is not None:
            out = tf.nn.bias_add(out, self.bias)
        return self.activation(out)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": tf.keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            **self._adapter_config(),
        }


class LoRAConv2D(_Adapter, tf.keras.layers.Layer):
    """A Conv2D layer (channels last) with a frozen kernel and bias plus a low-rank update
    of the kernel seen as a (kh * kw * channels, filters) matrix."""

    def __init__(self, conv_config, rank=4, alpha=None, mode="lora", a_seed=0, **kw):
        super().__init__(**kw)
        self.conv_config = dict(conv_config)
        if self.conv_config.get("data_format") not in (None, "channels_last"):
            raise ValueError("adapters support Conv2D with data_format='channels_last' only.")
        if (
            tuple(self.conv_config.get("dilation_rate", (1, 1))) != (1, 1)
            or self.conv_config.get("groups", 1) != 1
        ):
            raise ValueError("adapters support Conv2D without dilation or groups only.")
        self.filters = int(self.conv_config["filters"])
        self.kernel_size = tuple(self.conv_config["kernel_size"])
        self.strides = tuple(self.conv_config.get("strides", (1, 1)))
        self.padding = self.conv_config.get("padding", "valid").upper()
        self.activation = tf.keras.activations.get(self.conv_config.get("activation"))
        self.use_bias = self.conv_config.get("use_bias", True)
        self.kernel_initializer = tf.keras.initializers.GlorotUniform()
        self.bias_initializer = tf.keras.initializers.Zeros()
        self._init_adapter(rank, rank if alpha is None else alpha, mode, a_seed)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        shape = (*self.kernel_size, channels, self.filters)
        self.kernel = self.add_weight(
            "kernel", shape=shape, initializer=self.kernel_initializer, trainable=False
        )
        self.bias = (
            self.add_weight(
                "bias", shape=(self.filters,), initializer=self.bias_initializer, trainable=False
            )
            if self.use_bias
            else None
        )
        self._add_factors(int(np.prod(shape[:-1])), self.filters)
        super().build(input_shape)

    def call(self, inputs):
        delta = tf.reshape(tf.matmul(self.lora_a, self.lora_b), self.kernel.shape)
        out = tf.nn.conv2d(
            inputs, self.kernel + self.scale * delta, strides=self.strides, padding=self.padding
        )
        if self.bias is not None:
            out = tf.nn.bias_add(out, self.bias)
        return self.activation(out)

    def get_config(self):
        return {**super().get_config(), "conv_config": self.conv_config, **self._adapter_config()}


class LoRAEmbedding(_Adapter, tf.keras.layers.Layer):
    """An Embedding layer with a frozen table plus a low-rank update (rows of A, times B)."""

    def __init__(
        self,
        input_dim,
        output_dim,
        rank=4,
        alpha=None,
        mode="lora",
        mask_zero=False,
        a_seed=0,
        **kw,
    ):
        super().__init__(**kw)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero = mask_zero
        self.embeddings_initializer = tf.keras.initializers.RandomUniform(-0.05, 0.05)
        self._init_adapter(rank, rank if alpha is None else alpha, mode, a_seed)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            trainable=False,
        )
        self._add_factors(self.input_dim, self.output_dim)
        super().build(input_shape)

    def call(self, inputs):
        ids = tf.cast(inputs, tf.int32)
        base = tf.nn.embedding_lookup(self.embeddings, ids)
        low = tf.matmul(tf.nn.embedding_lookup(self.lora_a, ids), self.lora_b)
        return base + self.scale * low

    def compute_mask(self, inputs, mask=None):
        return tf.not_equal(inputs, 0) if self.mask_zero else None

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "mask_zero": self.mask_zero,
            **self._adapter_config(),
        }


class LoRALSTM(_Adapter, tf.keras.layers.Layer):
    """An LSTM (tanh, sigmoid gates, Keras' gate order i, f, c, o) whose kernel and
    recurrent kernel are frozen, plus one low-rank update of the two stacked, the matrix
    the gates see: [x, h] @ [[kernel], [recurrent_kernel]] (A: (inputs + units, r),
    B: (r, 4 * units)). It computes what Keras' LSTM computes, masks included."""

    def __init__(
        self,
        units,
        rank=4,
        alpha=None,
        mode="lora",
        return_sequences=False,
        unit_forget_bias=True,
        a_seed=0,
        **kw,
    ):
        super().__init__(**kw)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = tf.keras.initializers.GlorotUniform()
        self.recurrent_initializer = tf.keras.initializers.Orthogonal()
        self.bias_initializer = tf.keras.initializers.Zeros()
        self.supports_masking = True
        self._init_adapter(rank, rank if alpha is None else alpha, mode, a_seed)

    def build(self, input_shape):
        n, u = int(input_shape[-1]), self.units
        self.kernel = self.add_weight(
            "kernel", shape=(n, 4 * u), initializer=self.kernel_initializer, trainable=False
        )
        self.recurrent_kernel = self.add_weight(
            "recurrent_kernel",
            shape=(u, 4 * u),
            initializer=self.recurrent_initializer,
            trainable=False,
        )
        bias_initializer = self.bias_initializer
        if self.unit_forget_bias:  # as Keras builds it: the forget gate's bias starts at 1

            def bias_initializer(shape, *args, **kwargs):
                return tf.concat(
                    [
                        self.bias_initializer((u,), *args, **kwargs),
                        tf.ones((u,)),
                        self.bias_initializer((2 * u,), *args, **kwargs),
                    ],
                    axis=0,
                )

        self.bias = self.add_weight(
            "bias", shape=(4 * u,), initializer=bias_initializer, trainable=False
        )
        self._add_factors(n + u, 4 * u)
        super().build(input_shape)

    def _kernels(self):
        delta = self.scale * tf.matmul(self.lora_a, self.lora_b)
        n = self.kernel.shape[0]
        return self.kernel + delta[:n], self.recurrent_kernel + delta[n:]

    def call(self, inputs, mask=None):
        kernel, recurrent = self._kernels()

        def step(x, states):
            h, c = states
            z = tf.matmul(x, kernel) + tf.matmul(h, recurrent) + self.bias
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, [h, c]

        zeros = tf.zeros([tf.shape(inputs)[0], self.units], inputs.dtype)
        last, outputs, _ = tf.keras.backend.rnn(step, inputs, [zeros, zeros], mask=mask)
        return outputs if self.return_sequences else last

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "unit_forget_bias": self.unit_forget_bias,
            **self._adapter_config(),
        }


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
            return tf.keras.layers.LSTM(
                layer.units, return_sequences=layer.return_sequences, name=layer.name
            )
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
