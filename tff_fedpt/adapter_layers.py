"""The adapter layers: a frozen base (Dense kernel, Conv2D kernel, Embedding table, LSTM
kernels) plus trainable low-rank factors A and B (`tff_fedpt.adapters` adds and merges
them; its docstring has the shapes)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MODES = ("lora", "ffa")


def factor_initializer(seed_offset: int):
    # He-uniform, as PyTorch's nn.Linear (and PEFT's LoRA A) draw theirs; a Keras class
    # the seeded generator reproduces (`frozen.FrozenInitializer`).
    return tf.keras.initializers.HeUniform(seed=seed_offset)


class Adapter:
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
        self.lora_a_initializer = factor_initializer(self.a_seed)
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


class LoRADense(Adapter, tf.keras.layers.Layer):
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


class LoRAConv2D(Adapter, tf.keras.layers.Layer):
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


class LoRAEmbedding(Adapter, tf.keras.layers.Layer):
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


class LoRALSTM(Adapter, tf.keras.layers.Layer):
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
