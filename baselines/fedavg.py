"""FedAvg on the full model: TFF's own `build_weighted_fed_avg` / `build_unweighted_fed_avg`."""

from __future__ import annotations

from typing import Optional

import tensorflow_federated as tff

from tff_fedpt import process
from tff_fedpt.training import algorithms


def build_fedavg_process(
    model_fn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
    client_weighting: Optional[tff.learning.ClientWeighting] = None,
) -> tff.learning.templates.LearningProcess:
    """TFF's FedAvg: every parameter is trained and communicated.

    A weighted (or default) `model_aggregator` gives `build_weighted_fed_avg`; an
    unweighted one (DP aggregators) gives `build_unweighted_fed_avg`. Its
    communication is accounted with `tff_fedpt.communication_cost`, the same helper
    as FedPT's.
    """
    if server_optimizer_fn is None:
        server_optimizer_fn = process.default_server_optimizer()
    if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
        return tff.learning.algorithms.build_unweighted_fed_avg(
            model_fn,
            client_optimizer_fn,
            server_optimizer_fn,
            model_aggregator=model_aggregator,
        )
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn,
        server_optimizer_fn,
        model_aggregator=model_aggregator,
        client_weighting=client_weighting or tff.learning.ClientWeighting.NUM_EXAMPLES,
    )


class FedAvg(algorithms.Algorithm):
    """TFF's FedAvg on the task's full model."""

    name = "fedavg"

    def build_process(self, model_fn, config, parts):
        return build_fedavg_process(
            model_fn,
            parts.client_optimizer,
            parts.server_optimizer,
            model_aggregator=parts.model_aggregator,
            client_weighting=parts.client_weighting,
        )
