"""Every private TensorFlow Federated module this package uses, imported in one place.

TFF 0.87 does not expose these through its public API; the package uses them for:

* communication accounting (`building_blocks`, `tree_analysis`: finding the broadcasts
  and aggregations in a computation);
* the FedPT client step (`model_delta_client_work`) and aggregator conversion
  (`factory_utils`);
* the local runtime (`context_stack_impl`, `runtime_error_context`, `executor_factory`:
  a TFF worker that dies with its parent);
* remote workers (`remote/`: the execution contexts, executors and compilers).

`USED` lists each attribute the package reads; `tests/test_tff_internals.py` checks them
all, so an upgrade of TFF that moves one fails there, by name, rather than deep in a run.
"""

from tensorflow_federated.python.aggregators import factory_utils
from tensorflow_federated.python.core.backends.native import compiler, mergeable_comp_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import (
    tensorflow_computation,
)
from tensorflow_federated.python.core.impl.compiler import building_blocks, tree_analysis
from tensorflow_federated.python.core.impl.context_stack import (
    context_stack_impl,
    runtime_error_context,
)
from tensorflow_federated.python.core.impl.execution_contexts import (
    async_execution_context,
    mergeable_comp_execution_context,
)
from tensorflow_federated.python.core.impl.executor_stacks import (
    executor_factory,
    python_executor_stacks,
)
from tensorflow_federated.python.core.impl.executors import (
    executors_errors,
    remote_executor,
    remote_executor_grpc_stub,
)
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.learning.templates import model_delta_client_work

# (module, dotted attribute) for every private name the package reads.
USED = (
    (building_blocks, "Call"),
    (building_blocks, "Intrinsic"),
    (tree_analysis, "visit_preorder"),
    (factory_utils, "as_weighted_aggregator"),
    (model_delta_client_work, "build_model_delta_update_with_tff_optimizer"),
    (context_stack_impl, "context_stack.set_default_context"),
    (context_stack_impl, "context_stack.current"),
    (runtime_error_context, "RuntimeErrorContext"),
    (executor_factory, "subprocess"),
    (executor_factory, "_GRPC_CHANNEL_OPTIONS"),
    (async_execution_context, "AsyncExecutionContext.invoke.__wrapped__"),
    (remote_executor_grpc_stub, "RemoteExecutorGrpcStub"),
    (remote_executor, "RemoteExecutor"),
    (python_executor_stacks, "ResourceManagingExecutorFactory"),
    (compiler, "desugar_and_transform_to_native"),
    (tensorflow_computation, "transform_args"),
    (tensorflow_computation, "transform_result"),
    (executors_errors, "RetryableError"),
    (mergeable_comp_compiler, "compile_to_mergeable_comp_form"),
    (mergeable_comp_execution_context, "MergeableCompExecutionContext"),
    (placements, "CLIENTS"),
)
