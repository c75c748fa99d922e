"""The frozen part of a FedPT model, in one package.

    spec.py         what is frozen: `FreezeSpec`, `parse_freeze`, `FreezeOptions`
    resolution.py   which layers a spec selects in a model: `resolve_freeze`, `FreezeReport`
    source.py       `FrozenSource`: the interface every frozen tensor's source implements
    seeded.py       sources drawn from the frozen seed: `FrozenInitializer`
    pretrained.py   sources the clients already hold: `PretrainedWeights`, `PretrainedValue`
    store.py        the pretrained-weights file and the remote workers' store
    fingerprint.py  the fingerprint that travels in place of pretrained values
    prefix.py       the frozen prefix: `frozen_prefix`, `split_model` (`tff_fedpt.features`)

Adding a frozen-value source (say, a quantized pretrained backbone) is one class that
implements `FrozenSource`, handed to the model by a `PretrainedWeights` whose `source_for`
returns it (docs/pretrained.md, "Adding a frozen source").
"""

from tff_fedpt.frozen.fingerprint import FINGERPRINT_WORDS, fingerprint, sources_fingerprint
from tff_fedpt.frozen.prefix import PrefixSplit, frozen_prefix, prefix_end, split_model
from tff_fedpt.frozen.pretrained import (
    FingerprintMismatchError,
    PretrainedOptions,
    PretrainedValue,
    PretrainedWeights,
)
from tff_fedpt.frozen.resolution import FreezeReport, LayerReport, resolve_freeze
from tff_fedpt.frozen.seeded import (
    FrozenInitializer,
    frozen_initializer_for,
    generate_frozen_weights,
)
from tff_fedpt.frozen.source import FrozenSource, short_name
from tff_fedpt.frozen.spec import (
    GENERATORS,
    NO_FREEZE,
    NON_TRAINABLE_STATE_OPTIONS,
    FreezeLike,
    FreezeOptions,
    FreezeSpec,
    as_freeze_spec,
    parse_freeze,
)

__all__ = [
    "FINGERPRINT_WORDS",
    "GENERATORS",
    "NON_TRAINABLE_STATE_OPTIONS",
    "NO_FREEZE",
    "FingerprintMismatchError",
    "FreezeLike",
    "FreezeOptions",
    "FreezeReport",
    "FreezeSpec",
    "FrozenInitializer",
    "FrozenSource",
    "LayerReport",
    "PrefixSplit",
    "PretrainedOptions",
    "PretrainedValue",
    "PretrainedWeights",
    "as_freeze_spec",
    "fingerprint",
    "frozen_initializer_for",
    "frozen_prefix",
    "generate_frozen_weights",
    "parse_freeze",
    "prefix_end",
    "resolve_freeze",
    "short_name",
    "sources_fingerprint",
    "split_model",
]
