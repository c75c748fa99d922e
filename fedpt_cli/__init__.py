"""What the absl binaries in scripts/ share: the entry wrapper (`entry`), the training
flags generated from the option groups (`training_flags`), and the side-by-side
comparison runner (`comparison_runner`).

Flags and printing live here and in scripts/, never in `tff_fedpt`. Importing this
package sets TensorFlow's C++ log level and gRPC's (unless already set), so a binary
imports it before anything that imports TensorFlow: gRPC would otherwise log an INFO line
each time a TFF worker is started while its threads run.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
