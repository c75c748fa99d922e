import math
import re

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import privacy, training
from tff_fedpt.tasks import load_task

from . import models


def _vector_process(factory, dim):
    return factory.create(tff.types.tensorflow_to_type([tf.TensorSpec([dim], tf.float32)]))


def test_clipping_exact_numbers():
    # Norms 5, 0.5 and 0 against clip 1: only the first is scaled, to (0.6, 0.8).
    # Mean of (0.6, 0.8), (0.3, 0.4), (0, 0) over clients_per_round = 3: (0.3, 0.4).
    factory = privacy.build_dp_aggregator(noise_multiplier=0.0, clients_per_round=3, clip=1.0)
    process = _vector_process(factory, 2)
    values = [[np.array(v, np.float32)] for v in ([3.0, 4.0], [0.3, 0.4], [0.0, 0.0])]
    output = process.next(process.initialize(), values)
    np.testing.assert_allclose(output.result[0], [0.3, 0.4], rtol=1e-6)
    assert output.measurements["clip"] == 1.0
    assert output.measurements["clip_fraction"] == pytest.approx(1 / 3)
    assert output.measurements["noise_stddev"] == 0.0
    # Every update reaching the sum has norm <= clip: a sum of 3 can be at most 3.
    big = [[np.array([30.0, 40.0], np.float32)]] * 3
    result = process.next(process.initialize(), big).result[0]
    assert np.linalg.norm(result * 3) <= 3.0 + 1e-5
    np.testing.assert_allclose(result, [0.6, 0.8], rtol=1e-6)


def test_noise_standard_deviation():
    # Fixed inputs (zeros), z = 1.5, clip = 2, 4 clients per round: the average gets
    # Gaussian noise of std z * clip / clients_per_round = 0.75. 20 draws of a
    # 1000-vector: 20,000 samples; the sample std's relative standard error is
    # 1/sqrt(2 * 20000) = 0.5%, so 3% is a 6-sigma tolerance.
    factory = privacy.build_dp_aggregator(noise_multiplier=1.5, clients_per_round=4, clip=2.0)
    process = _vector_process(factory, 1000)
    state = process.initialize()
    zeros = [[np.zeros(1000, np.float32)]] * 4
    draws = []
    for _ in range(20):
        output = process.next(state, zeros)
        state = output.state
        draws.append(output.result[0])
    samples = np.concatenate(draws)
    assert output.measurements["noise_stddev"] == pytest.approx(0.75)
    assert samples.std() == pytest.approx(0.75, rel=0.03)
    assert abs(samples.mean()) < 5 * 0.75 / math.sqrt(samples.size)
    assert not np.array_equal(draws[0], draws[1])  # fresh noise every round


def test_zero_noise_dp_fedpt_equals_tff_unweighted_fedavg_with_clipping():
    data = models.client_data()
    clip = 0.05  # small enough that every client's update is clipped
    fedpt = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(freeze=None),
        tff.learning.optimizers.build_sgdm(0.1),
        model_aggregator=privacy.build_dp_aggregator(
            noise_multiplier=0.0, clients_per_round=3, clip=clip
        ),
    )
    fedavg = tff.learning.algorithms.build_unweighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            models.mlp(), loss=models.loss(), input_spec=models.INPUT_SPEC
        ),
        tff.learning.optimizers.build_sgdm(0.1),
        model_aggregator=tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
            noise_multiplier=0.0, clients_per_round=3.0, clip=clip
        ),
    )
    s1 = fedpt.initialize()
    s2 = fedavg.set_model_weights(fedavg.initialize(), fedpt.get_model_weights(s1))
    for _ in range(3):
        out = fedpt.next(s1, data)
        s1 = out.state
        s2 = fedavg.next(s2, data).state
    assert out.metrics["aggregator"]["clip_fraction"] == 1.0
    a = fedpt.get_model_weights(s1).trainable
    b = fedavg.get_model_weights(s2).trainable
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) <= 1e-6


def test_epsilon_matches_dp_accounting():
    # The reference figure of FACTS.md: q = 0.01, z = 1.0, 100 steps, delta = 1e-5.
    setting = privacy.PrivacySetting(1.0, clients_per_round=1, population=100, sampling="poisson")
    rdp = privacy.compute_epsilon(setting, 100, 1e-5, "rdp")
    pld = privacy.compute_epsilon(setting, 100, 1e-5, "pld")
    assert rdp == pytest.approx(1.21, abs=0.01)
    assert pld == pytest.approx(0.72, abs=0.01)
    independent = dp_accounting.rdp.RdpAccountant()
    for _ in range(100):
        independent.compose(
            dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.0))
        )
    assert rdp == pytest.approx(independent.get_epsilon(1e-5), rel=1e-9)
    # One round's curve is computed once and scaled: equal to composing the rounds.
    for rounds in (1, 7, 300):
        composed = dp_accounting.rdp.RdpAccountant()
        composed.compose(setting.event(rounds))
        assert privacy.compute_epsilon(setting, rounds, 1e-5) == composed.get_epsilon(1e-5)
    uniform = privacy.PrivacySetting(1.0, 10, 1000, sampling="uniform")
    replace_one = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    replace_one.compose(
        dp_accounting.SampledWithoutReplacementDpEvent(
            1000, 10, dp_accounting.GaussianDpEvent(1.0)
        ),
        50,
    )
    assert privacy.compute_epsilon(uniform, 50, 1e-5) == pytest.approx(
        replace_one.get_epsilon(1e-5), rel=1e-9
    )
    assert privacy.compute_epsilon(setting, 0, 1e-5) == 0.0
    assert (
        privacy.compute_epsilon(privacy.PrivacySetting(0.0, 1, 100, "poisson"), 3, 1e-5) == math.inf
    )


@pytest.mark.parametrize(
    "sampling,accountant", [("poisson", "rdp"), ("poisson", "pld"), ("uniform", "rdp")]
)
def test_calibration_reaches_target_within_one_percent(sampling, accountant):
    kwargs = dict(clients_per_round=20, population=1000, sampling=sampling)
    z = privacy.calibrate_noise_multiplier(
        target_epsilon=2.0, target_delta=1e-5, rounds=200, accountant=accountant, **kwargs
    )
    epsilon = privacy.compute_epsilon(privacy.PrivacySetting(z, **kwargs), 200, 1e-5, accountant)
    assert epsilon == pytest.approx(2.0, rel=0.01)
    assert epsilon <= 2.0 + 1e-9
    # The same setting again (a grid's next clip or rate): the cached value.
    hits = privacy.calibrate_noise_multiplier.cache_info().hits
    again = privacy.calibrate_noise_multiplier(
        target_epsilon=2.0, target_delta=1e-5, rounds=200, accountant=accountant, **kwargs
    )
    assert again == z and privacy.calibrate_noise_multiplier.cache_info().hits == hits + 1


def test_sampling():
    a = privacy.sample_clients(100, 10, "uniform", seed=1, round_num=3)
    assert len(a) == 10 == len(set(a.tolist()))
    np.testing.assert_array_equal(a, privacy.sample_clients(100, 10, "uniform", 1, 3))
    assert not np.array_equal(a, privacy.sample_clients(100, 10, "uniform", 1, 4))
    sizes = [len(privacy.sample_clients(100, 10, "poisson", 1, r)) for r in range(2000)]
    # Binomial(100, 0.1): mean 10, std 3; the mean of 2000 rounds is within 0.3 of 10.
    assert np.mean(sizes) == pytest.approx(10, abs=0.3)
    assert np.std(sizes) == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(clip=0.0), ValueError, "clip must be finite and > 0; received 0.0"),
        (dict(clip=-1.0), ValueError, "clip must be finite and > 0"),
        (dict(noise_multiplier=-0.1), ValueError, "noise_multiplier must be finite and >= 0"),
        (
            dict(noise_multiplier=1.0, adaptive_clip=True),
            ValueError,
            r"noise_multiplier=1 is too large for adaptive_clip with clients_per_round=10.*"
            r"< 0.1 \* clients_per_round = 1",
        ),
    ],
)
def test_bad_dp_aggregator_arguments(kwargs, error, message):
    args = dict(noise_multiplier=0.5, clients_per_round=10, clip=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        privacy.build_dp_aggregator(**args)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(client_weighting="num_examples", noise_multiplier=0.5),
            "num_examples cannot be used with --dp",
        ),
        (dict(), "exactly one of --noise_multiplier and --target_epsilon"),
        (dict(noise_multiplier=0.5, target_epsilon=3.0), "exactly one of"),
        (dict(noise_multiplier=0.5, clip=0.0), "--clip must be finite and > 0"),
        (dict(noise_multiplier=2.0, adaptive_clip=True), "too large for --adaptive_clip"),
        (
            dict(noise_multiplier=0.5, accountant="pld"),
            "--accountant=pld does not support --sampling=uniform",
        ),
    ],
)
def test_bad_dp_flag_combinations(kwargs, message):
    """The library names its fields; the binaries' message (`flag_message`) the flags."""
    config = training.ExperimentConfig(dp=True, **kwargs)
    with pytest.raises(training.ConfigError) as info:
        training.validate(config, load_task("digits"))
    assert "--" not in str(info.value)
    assert re.search(message, info.value.flag_message()), info.value.flag_message()


def test_resume_keeps_dp_state_and_epsilon(tmp_path):
    task = load_task("digits", num_clients=20)
    common = dict(
        dp=True,
        noise_multiplier=0.5,
        adaptive_clip=True,
        clip=0.1,
        sampling="poisson",
        clients_per_round=10,
        rounds_per_checkpoint=2,
        rounds_per_eval=4,
        root_output_dir=str(tmp_path),
    )
    full = training.run_experiment(
        training.ExperimentConfig(total_rounds=4, experiment_name="full", **common), task
    )
    training.run_experiment(
        training.ExperimentConfig(total_rounds=2, experiment_name="resumed", **common), task
    )
    resumed = training.run_experiment(
        training.ExperimentConfig(total_rounds=4, experiment_name="resumed", **common), task
    )
    assert resumed.resumed_from_round == 2
    rows = resumed.rows
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    # The adaptive clip in force in round 3 is the one round 2 produced: the DP state
    # came back from the checkpoint (a fresh state would restart at clip 0.1).
    assert float(rows[2]["aggregator/clip"]) == pytest.approx(
        float(rows[1]["aggregator/dp/dp_query_metrics/clip"]), rel=1e-6
    )
    assert float(rows[2]["aggregator/clip"]) != pytest.approx(0.1)
    assert float(rows[-1]["privacy/epsilon"]) == float(full.rows[-1]["privacy/epsilon"])
    setting = privacy.PrivacySetting(0.5, 10, 20, "poisson")
    assert float(rows[-1]["privacy/epsilon"]) == privacy.compute_epsilon(setting, 4, 1 / 20)


def test_accountant_steps_per_round_as_dp_accounting_and_sampling_is_explicit():
    setting = privacy.PrivacySetting(0.5, 4, 8, "uniform")
    accountant = privacy.PrivacyAccountant(setting, target_delta=1 / 8)  # delta 1/population
    epsilons = [accountant.step() for _ in range(3)]
    oracle = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    for epsilon in epsilons:
        oracle.compose(
            dp_accounting.SampledWithoutReplacementDpEvent(8, 4, dp_accounting.GaussianDpEvent(0.5))
        )
        assert epsilon == pytest.approx(oracle.get_epsilon(1 / 8), rel=1e-9)
    poisson = privacy.PrivacyAccountant(privacy.PrivacySetting(0.5, 4, 8, "poisson"), 1 / 8)
    # Fixed-size rounds accounted as Poisson ones would report about 37% too little.
    assert (round(epsilons[-1], 2), round(poisson.step(3), 2)) == (10.72, 6.74)
    with pytest.raises(TypeError, match="sampling"):
        privacy.PrivacySetting(0.5, 4, 8)  # no default: the sampling used must be named
    with pytest.raises(ValueError, match="does not support fixed-size"):
        privacy.PrivacyAccountant(setting, 1e-5, accountant="pld")
