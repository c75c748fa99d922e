"""Which clients train in a round, and their data: a deterministic function of (seed, round)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tff_fedpt import privacy
from tff_fedpt.tasks import Preprocessing, Task
from tff_fedpt.training.config import LoopOptions


def sample_clients(
    config: LoopOptions, client_ids: Sequence[str], round_num: int
) -> tuple[list[str], list[int]]:
    """The round's client ids and their shuffle seeds.

    The same (config.seed, round_num) always gives the same clients and seeds, so a
    resumed run trains on exactly what an uninterrupted one would.
    """
    picks = privacy.sample_clients(
        len(client_ids), config.clients_per_round, config.sampling, config.seed, round_num
    )
    rng = np.random.default_rng([config.seed, round_num, 1])
    shuffle_seeds = rng.integers(0, 2**31 - 1, size=len(picks))
    return [client_ids[i] for i in picks], [int(s) for s in shuffle_seeds]


class ClientDatasets:
    """Builds each round's client datasets; each client's input map is built once.

    Tracing the task's map function anew every round grows memory, so the mapped
    (x, y) dataset of a client is kept after its first use; `client_input` (the frozen
    prefix's `features.FeatureMap`) maps it once more, then it is kept.
    """

    def __init__(self, task: Task, config: LoopOptions, client_input=None):
        self._task = task
        self._client_input = client_input
        self._preprocessing = Preprocessing(
            batch_size=config.client_batch_size,
            epochs=config.client_epochs_per_round,
            max_elements=config.max_elements_per_client,
        )
        self._mapped: dict[str, tf.data.Dataset] = {}

    def __call__(self, client_ids: Sequence[str], seeds: Sequence[int]) -> list[tf.data.Dataset]:
        data = []
        for client_id, seed in zip(client_ids, seeds):
            if client_id not in self._mapped:
                mapped = self._task.to_model_input(
                    self._task.train_data.create_tf_dataset_for_client(client_id)
                )
                if self._client_input is not None:
                    mapped = self._client_input(mapped)
                self._mapped[client_id] = mapped
            data.append(
                self._task.client_dataset(
                    self._mapped[client_id], self._preprocessing, seed, mapped=True
                )
            )
        return data
