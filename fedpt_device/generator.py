"""The portable frozen-weight generator: a counter-based hash of 32-bit integer ops that
any language reproduces, written once over a small set of array ops.

`NUMPY` runs it in plain NumPy (the reference an app ports); `tff_fedpt.portable` runs the
same steps with TensorFlow ops, which convert to TensorFlow Lite builtins (no Flex op).
The algorithm (docs/portable_generator.md has the test vectors):

Integers are 32-bit two's complement and wrap on overflow. `shr(x, k)` is the logical
right shift of x's 32 bits, written without a bitwise and as `(x >> k) - (x >> 31) *
2**(32 - k)` (arithmetic shifts only). `mix(x)` is Wellons' lowbias32:

    x ^= shr(x, 16); x *= 0x7feb352d; x ^= shr(x, 15); x *= 0x846ca68b; x ^= shr(x, 16)

Key: the int64 seed s gives k_lo (its low 32 bits) and k_hi (s >> 32). Each frozen tensor
t (its index in model order) and stream c (0, 1, ...: independent draws for one tensor) has
a base `b = mix(k_hi ^ mix(k_lo ^ mix(t * 0x9e3779b9 + 0x632be5ab + c)))`; element j (row-major flat
index) draws `h = mix(mix(j * 0x9e3779b9 ^ b))`, and `m = shr(h, 8)`, 24 uniform bits.

Floats (float32 throughout): `u = m * 2**-24` in [0, 1).
  uniform(lo, hi)      min(lo + (hi - lo) * u, the float below hi), stream 0
  normal(mean, std)    Box-Muller: u1 = (m0 + 1) * 2**-24 (stream 0), u2 from stream 1,
                       z = sqrt(-2 log u1) * cos(2 pi u2); mean + std * z
  truncated normal     z from streams (0, 1), (2, 3), ... (6 pairs): the first with
                       |z| <= 2, else the last clipped to [-2, 2]; mean + std * z
  variance scaling     scale / fan (Keras' fan_in, fan_out, fan_avg); uniform with limit
                       sqrt(3 scale), normal with std sqrt(scale), truncated normal with
                       std sqrt(scale) / 0.87962566103423978 (Keras' constant)
  orthogonal           the normal draw of a (max(r, c), min(r, c)) matrix, Q of its QR
                       decomposition with R's diagonal positive (as Keras), by Householder
                       reflections (`orthonormal_columns`), gain
  zeros, ones, constant, identity: no draw
Integer ops and uniform floats are bit-identical in NumPy, TensorFlow and TensorFlow Lite;
log, cos and sqrt, and the orthogonal family's sums, agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = 0x9E3779B9
MIX_1 = 0x7FEB352D
MIX_2 = 0x846CA68B
OFFSET = 0x632BE5AB  # keeps seed 0, tensor 0 off mix's fixed point mix(0) == 0
TRUNCATED_PAIRS = 6
TRUNCATED_STDDEV = 0.87962566103423978  # scipy.stats.truncnorm.std(a=-2, b=2), as Keras
KINDS = ("uniform", "normal", "truncated_normal")


def as_int32(value: int) -> int:
    """`value`'s low 32 bits as a signed int32 (Python int)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class NumpyOps:
    """The array ops the generator needs, in NumPy (int32 arrays wrap on overflow)."""

    def int32(self, value):
        return np.asarray(value, np.int32)

    def arange(self, n, like):
        return np.arange(n, dtype=np.int32)

    def mul(self, x, constant):
        with np.errstate(over="ignore"):
            return (np.asarray(x, np.int32) * np.int32(as_int32(constant))).astype(np.int32)

    def add(self, x, constant):
        with np.errstate(over="ignore"):
            return (np.asarray(x, np.int32) + np.int32(as_int32(constant))).astype(np.int32)

    def xor(self, x, y):
        return np.bitwise_xor(np.asarray(x, np.int32), np.asarray(y, np.int32))

    def sar(self, x, k):
        return np.right_shift(np.asarray(x, np.int32), np.int32(k))

    def sub_mul(self, x, y, constant):
        """x - y * constant, wrapping."""
        with np.errstate(over="ignore"):
            return (x - y * np.int32(constant)).astype(np.int32)

    def seed_words(self, seed):
        s = np.int64(seed)
        return np.int32(as_int32(int(s))), np.int32(int(s) >> 32)

    def to_float(self, m):
        return np.asarray(m, np.int32).astype(np.float32)

    def f32(self, value):
        return np.float32(value)

    def log(self, x):
        return np.log(x).astype(np.float32)

    def cos(self, x):
        return np.cos(x).astype(np.float32)

    def sqrt(self, x):
        return np.sqrt(x).astype(np.float32)

    def abs(self, x):
        return np.abs(x)

    def where(self, condition, x, y):
        return np.where(condition, x, y).astype(np.float32)

    def minimum(self, x, y):
        return np.minimum(x, y).astype(np.float32)

    def clip(self, x, lo, hi):
        return np.clip(x, np.float32(lo), np.float32(hi)).astype(np.float32)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def one_hot(self, k, depth):
        out = np.zeros(depth, np.float32)
        out[k] = 1.0
        return out

    def one_hot_rows(self, n, depth):
        return np.eye(n, depth, dtype=np.float32)

    def rows_from(self, k, m):
        return (np.arange(m) >= k).astype(np.float32)

    def column(self, r, k):
        return np.ascontiguousarray(r[:, k])

    def matmul(self, a, b):
        return np.matmul(a, b).astype(np.float32)

    def reduce_sum(self, x, axis=None):
        return np.sum(x, axis=axis, dtype=np.float32)

    def loop(self, n, body, state, reverse=False):
        for k in reversed(range(n)) if reverse else range(n):
            state = body(k, *state)
        return state

    def transpose(self, x):
        return np.ascontiguousarray(x.T)

    def fill(self, shape, value):
        return np.full(shape, value, np.float32)

    def eye(self, rows, cols):
        return np.eye(rows, cols, dtype=np.float32)


NUMPY = NumpyOps()


def shr(ops, x, k: int):
    """Logical right shift of the 32-bit pattern by k (2 <= k <= 31), arithmetic ops only."""
    return ops.sub_mul(ops.sar(x, k), ops.sar(x, 31), 1 << (32 - k))


def mix(ops, x):
    x = ops.xor(x, shr(ops, x, 16))
    x = ops.mul(x, MIX_1)
    x = ops.xor(x, shr(ops, x, 15))
    x = ops.mul(x, MIX_2)
    return ops.xor(x, shr(ops, x, 16))


def base(ops, seed, tensor: int, stream: int):
    """The per-tensor, per-stream key (a scalar int32)."""
    k_lo, k_hi = ops.seed_words(seed)
    first = mix(ops, ops.add(ops.mul(ops.int32(tensor), GOLDEN), OFFSET + stream))
    return mix(ops, ops.xor(k_hi, mix(ops, ops.xor(k_lo, first))))


def bits24(ops, seed, tensor: int, stream: int, n: int):
    """n integers in [0, 2**24), one per element index, as int32."""
    key = base(ops, seed, tensor, stream)
    h = ops.xor(ops.mul(ops.arange(n, key), GOLDEN), key)
    return shr(ops, mix(ops, mix(ops, h)), 8)


def unit_uniform(ops, seed, tensor, stream, n):
    return ops.to_float(bits24(ops, seed, tensor, stream, n)) * ops.f32(2.0**-24)


def uniform(ops, seed, tensor, n, lo, hi):
    u = unit_uniform(ops, seed, tensor, 0, n)
    below_hi = np.nextafter(np.float32(hi), np.float32(-np.inf), dtype=np.float32)
    value = ops.f32(lo) + ops.f32(float(hi) - float(lo)) * u
    return ops.minimum(value, ops.f32(below_hi))


def _standard_normal(ops, seed, tensor, stream, n):
    u1 = (ops.to_float(bits24(ops, seed, tensor, stream, n)) + ops.f32(1.0)) * ops.f32(2.0**-24)
    u2 = unit_uniform(ops, seed, tensor, stream + 1, n)
    radius = ops.sqrt(ops.f32(-2.0) * ops.log(u1))
    return radius * ops.cos(ops.f32(2.0 * math.pi) * u2)


def normal(ops, seed, tensor, n, mean, stddev):
    return ops.f32(mean) + ops.f32(stddev) * _standard_normal(ops, seed, tensor, 0, n)


def truncated_normal(ops, seed, tensor, n, mean, stddev):
    """Standard normal draws redrawn (up to TRUNCATED_PAIRS times) outside [-2, 2]."""
    z = ops.clip(_standard_normal(ops, seed, tensor, 2 * (TRUNCATED_PAIRS - 1), n), -2.0, 2.0)
    for pair in reversed(range(TRUNCATED_PAIRS - 1)):
        candidate = _standard_normal(ops, seed, tensor, 2 * pair, n)
        z = ops.where(ops.abs(candidate) <= ops.f32(2.0), candidate, z)
    return ops.f32(mean) + ops.f32(stddev) * z


def compute_fans(shape) -> tuple[float, float]:
    """Fan-in and fan-out exactly as `tf.keras.initializers` compute them."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = 1
    for dim in shape[:-2]:
        receptive *= dim
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def variance_scaling(scale, mode, distribution, shape) -> tuple[str, float, float]:
    """(kind, a, b): the draw Keras' VarianceScaling makes, as uniform(-a, a) or
    normal / truncated normal (0, b)."""
    fan_in, fan_out = compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2.0)
    scale = float(scale) / max(1.0, fan)
    if distribution == "truncated_normal":
        return "truncated_normal", 0.0, math.sqrt(scale) / TRUNCATED_STDDEV
    if distribution in ("untruncated_normal", "normal"):
        return "normal", 0.0, math.sqrt(scale)
    limit = math.sqrt(3.0 * scale)
    return "uniform", -limit, limit


def draw(ops, kind, seed, tensor, shape, a, b):
    """A tensor of `shape`: uniform(a, b), normal(a, b) or truncated_normal(a, b)."""
    n = int(np.prod(shape, dtype=np.int64))
    if n >= 1 << 31:
        raise ValueError(f"the portable generator draws at most 2**31 - 1 values; got {shape}.")
    flat = {"uniform": uniform, "normal": normal, "truncated_normal": truncated_normal}[kind](
        ops, seed, tensor, n, a, b
    )
    return ops.reshape(flat, list(shape))


def orthonormal_columns(ops, a, m: int, n: int):
    """Q of the thin QR decomposition of a (m x n, m >= n) with R's diagonal positive (the
    unique such Q, as Keras' Orthogonal takes it), by n Householder reflections in a loop:
    matrix products, sums and square roots only (TensorFlow Lite builtins, `WHILE`)."""
    two = ops.f32(2.0)

    def outer(u, w):
        return ops.reshape(u, [m, 1]) * ops.reshape(w, [1, -1])

    def reflect(k, r, vs):
        e_k = ops.one_hot(k, m)
        x = ops.column(r, k) * ops.rows_from(k, m)  # column k below the diagonal
        x_k = ops.reduce_sum(x * e_k)
        sign = ops.where(x_k >= ops.f32(0.0), ops.f32(1.0), ops.f32(-1.0))
        v = x + sign * ops.sqrt(ops.reduce_sum(x * x)) * e_k  # R_kk becomes -sign |x|
        v = v / ops.sqrt(ops.reduce_sum(v * v))
        r = r - two * outer(v, ops.matmul(ops.reshape(v, [1, m]), r))
        return r, vs + outer(v, ops.one_hot(k, n))

    r, vs = ops.loop(n, reflect, (a, a * ops.f32(0.0)))

    def apply(k, q):  # Q = H_0 H_1 ... H_{n-1} [I_n; 0]
        v = ops.column(vs, k)
        return (q - two * outer(v, ops.matmul(ops.reshape(v, [1, m]), q)),)

    identity = ops.transpose(ops.reshape(ops.one_hot_rows(n, m), [n, m]))
    (q,) = ops.loop(n, apply, (identity,), reverse=True)
    diagonal = ops.reduce_sum(r * identity, axis=0)
    return q * ops.where(diagonal >= ops.f32(0.0), ops.f32(1.0), ops.f32(-1.0))


def generate(ops, class_name: str, config: dict, shape, seed, tensor: int):
    """One Keras initializer family (after aliases: see `tff_fedpt.frozen.seeded`)."""
    shape = tuple(int(d) for d in shape)
    if class_name == "Zeros":
        return ops.fill(shape, 0.0)
    if class_name == "Ones":
        return ops.fill(shape, 1.0)
    if class_name == "Constant":
        return ops.fill(shape, float(config.get("value", 0)))
    if class_name == "Identity":
        return ops.eye(*shape) * ops.f32(config.get("gain", 1.0))
    if class_name == "RandomUniform":
        return draw(ops, "uniform", seed, tensor, shape, config["minval"], config["maxval"])
    if class_name == "RandomNormal":
        return draw(ops, "normal", seed, tensor, shape, config["mean"], config["stddev"])
    if class_name == "TruncatedNormal":
        return draw(ops, "truncated_normal", seed, tensor, shape, config["mean"], config["stddev"])
    if class_name == "VarianceScaling":
        kind, a, b = variance_scaling(
            config["scale"], config["mode"], config["distribution"], shape
        )
        return draw(ops, kind, seed, tensor, shape, a, b)
    if class_name == "Orthogonal":
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        a = draw(ops, "normal", seed, tensor, (max(rows, cols), min(rows, cols)), 0.0, 1.0)
        q = orthonormal_columns(ops, a, max(rows, cols), min(rows, cols))
        if rows < cols:
            q = ops.transpose(q)
        return ops.reshape(q, list(shape)) * ops.f32(config.get("gain", 1.0))
    raise ValueError(f"the portable generator has no initializer {class_name!r}.")
