import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from baselines import fedavg, pvt, small_model
from tff_fedpt import composer, device, training
from tff_fedpt.tasks import load_task

from . import models


def _plain(build):
    return lambda: tff.learning.models.from_keras_model(
        build(), loss=models.loss(), input_spec=models.INPUT_SPEC
    )


def _losses(process, rounds=6):
    data = models.client_data(examples=30)
    state = process.initialize()
    losses = []
    for _ in range(rounds):
        output = process.next(state, data)
        state = output.state
        losses.append(float(output.metrics["client_work"]["train"]["loss"]))
    return losses, output.metrics, state


def _narrow_mlp(width):
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(4,)),
            tf.keras.layers.Dense(width, activation="relu", name="hidden"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )


def test_fedavg_baseline_learns():
    process = fedavg.build_fedavg_process(
        _plain(models.mlp), tff.learning.optimizers.build_sgdm(0.3)
    )
    losses, _, _ = _losses(process)
    assert losses[-1] < losses[0]


def test_small_model_width_matches_trainable_count():
    # 4-w-3 MLP: 4w + w + 3w + 3 = 8w + 3 parameters. FedPT on the 4-8-3 MLP with the
    # hidden layer frozen trains 27: w = 3 gives exactly 27.
    assert small_model.matched_width(_narrow_mlp, 27) == 3
    assert small_model.matched_width(_narrow_mlp, 30) == 3  # 27 is closer than 35
    assert small_model.matched_width(_narrow_mlp, 33) == 4  # 35 is closer than 27
    with pytest.raises(ValueError, match="target_params must be >= 1"):
        small_model.matched_width(_narrow_mlp, 0)
    # Digits CNN: 4,810 + 523 * width parameters; FedPT trains 25,290 -> width 39.
    task = load_task("digits")
    config = training.validate(training.ExperimentConfig(algorithm="small_model"), task)
    assert small_model.width_for(config, task) == 39


def test_small_model_learns():
    process = fedavg.build_fedavg_process(
        _plain(lambda: _narrow_mlp(3)), tff.learning.optimizers.build_sgdm(0.3)
    )
    losses, _, _ = _losses(process)
    assert losses[-1] < losses[0]


def test_pvt_learns_and_sends_only_the_selected_variables():
    process = pvt.build_pvt_process(
        _plain(models.mlp),
        tff.learning.optimizers.build_sgdm(0.3),
        trainable_fraction=0.5,
        schedule_seed=1,
    )
    data = models.client_data(examples=30)
    state = process.initialize()
    sizes = [4 * 8 * 4, 8 * 4, 8 * 3 * 4, 3 * 4]  # bytes of kernel/bias of each layer
    losses, seen = [], set()
    for _ in range(6):
        before = process.get_model_weights(state).trainable
        output = process.next(state, data)
        state = output.state
        after = process.get_model_weights(state).trainable
        changed = [i for i, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b)]
        comm = output.metrics["communication"]
        assert comm["selected_variables"] == 2 == len(changed)
        # Upload: exactly the variables that moved, plus the float32 client weight.
        assert comm["upload_bytes_per_client"] == sum(sizes[i] for i in changed) + 4
        assert comm["broadcast_bytes_per_client"] == sum(sizes)
        seen.update(changed)
        losses.append(float(output.metrics["client_work"]["train"]["loss"]))
    assert seen == {0, 1, 2, 3}  # the schedule reaches every variable
    assert losses[-1] < losses[0]
    # One server half: PVT's `next` runs the composer's server step; devices cannot run
    # its client work (the schedule lives in the server's client work state): refused.
    assert isinstance(process, tff.learning.templates.LearningProcess)
    assert composer.parts(process).server_step is not None
    for call in (device.broadcast_payload, lambda p, s: device.apply_device_updates(p, s, [1])):
        with pytest.raises(ValueError, match="cannot run on devices: PVT's clients train"):
            call(process, state)
    with pytest.raises(ValueError, match=r"trainable_fraction must be in \(0, 1\]"):
        pvt.build_pvt_process(
            _plain(models.mlp), tff.learning.optimizers.build_sgdm(0.3), trainable_fraction=0
        )


@pytest.mark.parametrize("algorithm", ["small_model", "pvt"])
def test_baselines_run_through_the_training_loop(tmp_path, algorithm):
    config = training.ExperimentConfig(
        algorithm=algorithm,
        total_rounds=2,
        clients_per_round=3,
        rounds_per_eval=2,
        root_output_dir=str(tmp_path),
        worker_restart_rounds=1,  # also exercises the worker restart inside the loop
    )
    result = training.run_experiment(config, load_task("digits", num_clients=20))
    assert [r["round"] for r in result.rows] == [1, 2]
    assert 0 <= result.final_eval["eval/accuracy"] <= 1
    if algorithm == "small_model":
        # 25,207 parameters: about FedPT's 25,290 trainable ones.
        assert result.rows[0]["broadcast_bytes_per_client"] == 25207 * 4
