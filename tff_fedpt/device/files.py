"""A device file checked before any interpreter sees it (`read_tflite`)."""

from __future__ import annotations

import os

from fedpt_device.protocol import SIGNATURES, DeviceError, read_file_header


def read_tflite(tflite_model: bytes | bytearray | str | os.PathLike) -> bytes:
    """The bytes of a FedPT client file, checked before any interpreter sees them.

    A damaged file handed to TensorFlow Lite's interpreter can crash the process (a
    truncated export segfaults it), so the file is checked here first: it is read whole,
    must carry the `TFL3` flatbuffer identifier, must parse completely (every table,
    vector and buffer inside the file's bounds) and must hold the signatures
    `export_tflite` writes.

    Args:
      tflite_model: The file's path, or its bytes.

    Returns:
      The file's bytes.

    Raises:
      DeviceError: naming the file and what is wrong with it.
    """
    data, source = read_file_header(tflite_model)
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        for buffer in model.buffers or []:
            if buffer.offset > 1 and buffer.offset + buffer.size > len(data):
                raise ValueError(f"a buffer ends at byte {buffer.offset + buffer.size:,}")
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise DeviceError(
            f"{source} is truncated or damaged ({len(data):,} bytes; its contents cannot "
            f"be read: {e}). Export it again."
        ) from None
    found = sorted(d.signatureKey.decode() for d in model.signatureDefs or [])
    missing = sorted(set(SIGNATURES) - set(found))
    if missing:
        raise DeviceError(
            f"{source} lacks the signatures {missing} (it has {found}); it is not a FedPT "
            "client from export_tflite, or an old one. Export it again."
        )
    return data
