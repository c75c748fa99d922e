"""tff_fedpt: Federated learning of Partially Trainable networks on TensorFlow Federated.

Importing this package makes TFF's local worker processes die with Python
(`tff_fedpt.runtime.install`): a script that uses TFF's default context exits cleanly,
even when its output is piped.
"""

from tff_fedpt import runtime as _runtime
from tff_fedpt.adapters import add_adapters, merge_adapters
from tff_fedpt.communication import (
    CommunicationCost,
    communication_cost,
    fedavg_communication_cost,
    type_bytes,
)
from tff_fedpt.frozen import (
    FreezeReport,
    FreezeSpec,
    LayerReport,
    PretrainedWeights,
    generate_frozen_weights,
    resolve_freeze,
)
from tff_fedpt.keras_models import (
    PartiallyTrainableModel,
    from_keras_model,
    keras_model_from_state,
)
from tff_fedpt.process import FedPTState, PretrainedFedPTState, build_fedpt_process

_runtime.install()

__version__ = "0.1.0"

__all__ = [
    "CommunicationCost",
    "FedPTState",
    "FreezeReport",
    "FreezeSpec",
    "LayerReport",
    "PartiallyTrainableModel",
    "PretrainedFedPTState",
    "PretrainedWeights",
    "add_adapters",
    "build_fedpt_process",
    "communication_cost",
    "fedavg_communication_cost",
    "from_keras_model",
    "generate_frozen_weights",
    "keras_model_from_state",
    "merge_adapters",
    "resolve_freeze",
    "type_bytes",
]
