"""What a FedPT client needs to convert to TensorFlow Lite builtins only (no Flex op):
gradients of ReLU, max pooling and convolution, and the loss, written in builtin ops.

`gradients()` is a scope in which the forward ops a Keras model creates get these
gradients (TensorFlow's own gradients of Relu, MaxPool and Conv2D need `ReluGrad`,
`MaxPoolGrad` and `Conv2DBackpropFilter`, which TensorFlow Lite has no builtin for);
`loss(keras_loss, y, predictions)` is the model's Keras loss in builtin ops
(`SparseSoftmaxCrossEntropyWithLogits` is not one). `conversion_error` turns the
converter's list of missing ops into one line naming the layers that use them.
"""

from __future__ import annotations

import contextlib
import re

import tensorflow as tf

_PREFIX = "FedPTBuiltin"


@tf.RegisterGradient(_PREFIX + "Relu")
def _relu_grad(op, dy):
    y = op.outputs[0]
    return dy * tf.cast(y > 0, dy.dtype)  # (a mask product: no batch-sized zeros stored)


@tf.RegisterGradient(_PREFIX + "Relu6")
def _relu6_grad(op, dy):
    y = op.outputs[0]
    return dy * tf.cast(tf.logical_and(y > 0, y < 6), dy.dtype)


def _attr(op, name):
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


@tf.RegisterGradient(_PREFIX + "MaxPool")
def _max_pool_grad(op, dy):
    """Non-overlapping windows (stride == window, NHWC): the gradient goes to the
    window's maximum and, among tied maxima, to the first in row-major window order, as
    TensorFlow's `MaxPoolGrad` sends it (ties are common: the zero background of an image
    before a convolution without activation)."""
    x, y = op.inputs[0], op.outputs[0]
    ksize, strides = list(op.get_attr("ksize")), list(op.get_attr("strides"))
    if ksize != strides or _attr(op, "data_format") != "NHWC" or ksize[0] != 1 or ksize[3] != 1:
        raise NotImplementedError(
            f"builtin max-pool gradient: needs stride == window (NHWC); got "
            f"window {ksize}, strides {strides}"
        )
    kh, kw = ksize[1], ksize[2]
    if _attr(op, "padding") == "SAME" and (x.shape[1] % kh or x.shape[2] % kw):
        raise NotImplementedError(
            f"builtin max-pool gradient: padding 'same' needs an input divisible by the "
            f"window; got input {x.shape[1]}x{x.shape[2]}, window {kh}x{kw} (use "
            "padding='valid', or an input size divisible by the window)"
        )
    b, h, w, c = y.shape
    height, width = h * kh, w * kw
    taken = tf.zeros_like(dy)  # 1 where a window's maximum has had the gradient
    rows = []
    for i in range(kh):
        pieces = []
        for j in range(kw):
            at_max = tf.cast(tf.equal(x[:, i:height:kh, j:width:kw, :], y), dy.dtype)
            first = at_max * (1.0 - taken)
            taken = taken + first
            pieces.append(tf.reshape(dy * first, [b, h, 1, w, 1, c]))
        rows.append(tf.concat(pieces, axis=4))
    dx = tf.reshape(tf.concat(rows, axis=2), [b, height, width, c])
    pad = [[0, 0], [0, x.shape[1] - height], [0, x.shape[2] - width], [0, 0]]
    return tf.pad(dx, pad) if pad[1][1] or pad[2][1] else dx


def _same_padding(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, [total // 2, total - total // 2]


@tf.RegisterGradient(_PREFIX + "Conv2D")
def _conv2d_grad(op, dy):
    """Input gradient: a transposed convolution (TRANSPOSE_CONV). Filter gradient: per
    kernel offset, the strided input slice times dy (SLICE, RESHAPE, MATMUL)."""
    x, kernel = op.inputs
    strides, dilations = list(op.get_attr("strides")), list(op.get_attr("dilations"))
    padding = _attr(op, "padding")
    if (
        _attr(op, "data_format") != "NHWC"
        or dilations != [1, 1, 1, 1]
        or padding
        not in (
            "VALID",
            "SAME",
        )
    ):
        raise NotImplementedError(
            "builtin Conv2D gradient: needs NHWC, no dilation, VALID or SAME; got "
            f"dilations {dilations}, padding {padding}"
        )
    kh, kw, cin, cout = kernel.shape
    b, hin, win, _ = x.shape
    _, hout, wout, _ = dy.shape
    sh, sw = strides[1], strides[2]
    dx = tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), strides, padding=padding)
    if padding == "SAME":
        _, ph = _same_padding(hin, kh, sh)
        _, pw = _same_padding(win, kw, sw)
        x = tf.pad(x, [[0, 0], ph, pw, [0, 0]])
    flat_dy = tf.reshape(dy, [b * hout * wout, cout])
    rows = []
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (hout - 1) + 1 : sh, j : j + sw * (wout - 1) + 1 : sw, :]
            patch = tf.reshape(patch, [b * hout * wout, cin])
            rows.append(tf.matmul(patch, flat_dy, transpose_a=True))
    dkernel = tf.reshape(tf.stack(rows), [kh, kw, cin, cout])
    return dx, dkernel


OVERRIDES = {name: _PREFIX + name for name in ("Relu", "Relu6", "MaxPool", "Conv2D")}


@contextlib.contextmanager
def gradients():
    """Around `tape.gradient`: Relu, Relu6, MaxPool and Conv2D are differentiated with the
    builtin-op gradients above. (`tf.GradientTape` looks gradients up by op type in
    TensorFlow's gradient registry, so the scope swaps those entries and restores them.)"""
    from tensorflow.python.framework import ops  # the registry has no public handle

    table = ops._gradient_registry._registry  # noqa: SLF001
    saved = {name: table[name] for name in OVERRIDES}
    try:
        for name, replacement in OVERRIDES.items():
            table[name] = table[replacement]
        yield
    finally:
        table.update(saved)


def loss(keras_loss, y, predictions):
    """The Keras loss in builtin ops; a loss with no builtin formulation here raises
    `NotImplementedError` naming it."""
    config = keras_loss.get_config() if hasattr(keras_loss, "get_config") else {}
    if isinstance(keras_loss, tf.keras.losses.SparseCategoricalCrossentropy):
        if config.get("ignore_class") is not None:
            raise NotImplementedError("SparseCategoricalCrossentropy(ignore_class=...)")
        # Every position of a sequence output is one example (the mean over all, as Keras).
        predictions = tf.reshape(predictions, [-1, predictions.shape[-1]])
        labels = tf.one_hot(tf.reshape(tf.cast(y, tf.int32), [-1]), predictions.shape[-1])
        if config.get("from_logits"):
            logits = predictions
            peak = tf.stop_gradient(tf.reduce_max(logits, axis=-1, keepdims=True))
            log_sum = tf.math.log(tf.reduce_sum(tf.exp(logits - peak), axis=-1)) + peak[:, 0]
            per_example = log_sum - tf.reduce_sum(labels * logits, axis=-1)
        else:
            eps = tf.keras.backend.epsilon()
            probs = predictions / tf.reduce_sum(predictions, axis=-1, keepdims=True)
            probs = tf.clip_by_value(probs, eps, 1.0 - eps)
            per_example = -tf.reduce_sum(labels * tf.math.log(probs), axis=-1)
        return tf.reduce_mean(per_example)
    if isinstance(keras_loss, tf.keras.losses.MeanSquaredError):
        return tf.reduce_mean(tf.square(predictions - tf.cast(y, predictions.dtype)))
    raise NotImplementedError(f"loss {type(keras_loss).__name__}")


def _layer_of(op_name: str, layer_names) -> str | None:
    parts = op_name.split("/")
    for part in parts:
        if part in layer_names:
            return part
    return None


def conversion_error(error: Exception, functions, layer_names) -> str:
    """One line from a converter error: the ops TensorFlow Lite has no builtin for, and
    the layers (or FedPT steps) whose graph holds them."""
    text = str(error)
    found = re.search(r"TF Select ops: ([^\n]+)", text)
    ops = sorted({o.strip() for o in found.group(1).split(",")}) if found else []
    if not ops:
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    graphs = []
    for function in functions:  # each signature's graph and the functions it calls
        graphs.append(function.graph)
        nested = function.graph._functions.values()  # noqa: SLF001
        graphs.extend(f.graph for f in nested if hasattr(f, "graph"))
    where = {}
    for graph in graphs:
        for node in graph.get_operations():
            if node.type in ops:
                layer = _layer_of(node.name, layer_names) or f"({node.name.split('/')[0]})"
                where.setdefault(node.type, set()).add(layer)
    named = (
        "; ".join(f"{op} (in {', '.join(sorted(where.get(op, {'?'})))})" for op in ops)
        or text.strip().splitlines()[0]
    )
    return (
        "the model cannot be exported with TensorFlow Lite builtins only: no builtin "
        f"formulation of {named}. Export without builtins_only (Flex), or change those layers."
    )
