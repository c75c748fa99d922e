"""benchmarks/: the suite's sections run from their parameters (no flags); the
Fashion-MNIST workload runs through scripts/benchmark.py in test_fashion_mnist.py."""

import pytest

from benchmarks import common, suite
from tff_fedpt import frozen as frozen_lib
from tff_fedpt.tasks import catalog


def test_communication_section_on_the_digits_model():
    params = suite.Params(communication_models=("digits/cnn",))
    lines, saved = [], []
    results = suite.run(params, ["communication"], lines.append, lambda n, r: saved.append(n))
    rows = results["communication"]
    spec = catalog.MODELS["digits/cnn"]
    assert [r["preset"] for r in rows] == list(spec.presets)
    model = spec.build(0)
    every = 4 * sum(int(w.shape.num_elements()) for w in model.weights)
    for row in rows:
        # FedAvg sends every weight both ways; FedPT the trainable ones (and its seed).
        assert row["fedavg_down"] >= every and row["fedavg_up"] >= every
        frozen = frozen_lib.resolve_freeze(model, spec.presets[row["preset"]]).frozen_layer_names
        assert (row["fedpt_down"] < row["fedavg_down"]) == bool(frozen), row
        assert row["reduction"] >= 1
    assert lines == ["\n## communication"] and saved == ["communication"]
    assert results["repeats"] == params.repeats and "CPU cores" in results["machine"]


def test_unknown_sections_are_named():
    with pytest.raises(ValueError, match=r"sections: unknown \['nope'\]"):
        suite.run(suite.Params(), ["nope"])
    assert issubclass(common.BenchmarkError, ValueError)


def test_features_section_names_a_bad_setting_or_frozen_kind_before_loading_data():
    from benchmarks import features

    with pytest.raises(common.BenchmarkError, match=r"--features_settings: unknown \['x'\]"):
        features.features_rounds(suite.Params(features_settings=("head", "x")), print)
    with pytest.raises(common.BenchmarkError, match=r"--features_frozen: .* received \['x'\]"):
        features.features_rounds(suite.Params(features_frozen=("x",)), print)
    with pytest.raises(common.BenchmarkError, match=r"--features_frozen: .* received \[\]"):
        features.features_rounds(suite.Params(features_frozen=()), print)


def test_model_functions_freeze_the_way_they_say():
    spec = catalog.MODELS["digits/cnn"]

    def build():
        return spec.build(0)

    tff_model = common.tff_model_fn(build, spec.input_spec, ("dense",))()
    fedpt_model = common.fedpt_model_fn(build, spec.input_spec, "dense")()
    # Keras' frozen layer still travels with TFF's model (non-trainable weights); FedPT's
    # frozen layer is not among its trainable weights either, and is drawn from its seed.
    full = len(common.tff_model_fn(build, spec.input_spec)().trainable_variables)
    assert len(tff_model.trainable_variables) == full - 2
    assert len(fedpt_model.trainable_variables) == full - 2
