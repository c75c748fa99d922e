"""tff_fedpt: Federated learning of Partially Trainable networks on TensorFlow Federated."""

from tff_fedpt.communication import (
    CommunicationCost,
    communication_cost,
    fedavg_communication_cost,
    type_bytes,
)
from tff_fedpt.freezing import (
    FreezeReport,
    FreezeSpec,
    LayerReport,
    generate_frozen_weights,
    resolve_freeze,
)
from tff_fedpt.keras_models import PartiallyTrainableModel, from_keras_model
from tff_fedpt.process import FedPTState, build_fedpt_process

__version__ = "0.1.0"

__all__ = [
    "CommunicationCost",
    "FedPTState",
    "FreezeReport",
    "FreezeSpec",
    "LayerReport",
    "PartiallyTrainableModel",
    "build_fedpt_process",
    "communication_cost",
    "fedavg_communication_cost",
    "from_keras_model",
    "generate_frozen_weights",
    "resolve_freeze",
    "type_bytes",
]
