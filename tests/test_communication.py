import numpy as np
import pytest
import tensorflow_federated as tff

import tff_fedpt


def test_type_bytes_hand_computed():
    # 3x4 float32 = 48 bytes, int64 scalar = 8, 5 x float64 = 40, 2x2 int8 = 4.
    t = tff.StructType(
        [
            tff.TensorType(np.float32, [3, 4]),
            ("seed", tff.TensorType(np.int64)),
            tff.StructType([tff.TensorType(np.float64, [5]), tff.TensorType(np.int8, [2, 2])]),
        ]
    )
    assert tff_fedpt.type_bytes(t) == 48 + 8 + 40 + 4
    assert tff_fedpt.type_bytes(tff.FederatedType(t, tff.CLIENTS)) == 100


@pytest.mark.parametrize(
    "t,message",
    [
        (tff.TensorType(np.float32, [None, 3]), "unknown shape"),
        (tff.TensorType(np.str_, [2]), "variable-size dtype"),
        (tff.SequenceType(tff.TensorType(np.float32)), "not a tensor or struct"),
    ],
)
def test_type_bytes_rejects_unsized_types(t, message):
    with pytest.raises(ValueError, match=message):
        tff_fedpt.type_bytes(t)


def test_reduction():
    a = tff_fedpt.CommunicationCost(10, 10)
    b = tff_fedpt.CommunicationCost(100, 300)
    assert a.bytes_per_client == 20
    assert a.reduction_versus(b) == 20.0
