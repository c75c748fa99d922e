import numpy as np
import pytest
import tensorflow as tf

import tff_fedpt
from tff_fedpt.tasks import DatasetNotFoundError, Preprocessing, digits, load_task, stackoverflow

from . import fake_data


def test_digits_partition_is_seeded_and_complete():
    labels = np.repeat(np.arange(10), 30)
    a = digits.partition(labels, 20, 0.5, seed=1)
    b = digits.partition(labels, 20, 0.5, seed=1)
    c = digits.partition(labels, 20, 0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert sorted(np.concatenate(a).tolist()) == list(range(300))  # every example once
    assert min(len(x) for x in a) >= 2
    # Label skew: with alpha=0.1 most clients are dominated by one class.
    skewed = digits.partition(labels, 20, 0.1, seed=1)
    top = [np.bincount(labels[x], minlength=10).max() / len(x) for x in skewed]
    assert np.median(top) > 0.5


def test_digits_task_offline():
    task = load_task("digits", num_clients=50, alpha=1.0)
    assert len(task.train_data.client_ids) == 50
    total_train = sum(
        len(list(task.train_data.create_tf_dataset_for_client(c)))
        for c in task.train_data.client_ids
    )
    total_test = len(list(task.test_data))
    assert total_train + total_test == 1797  # every real image is used once
    ds = task.client_dataset(
        task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0]),
        Preprocessing(batch_size=4, epochs=2, max_elements=5),
        seed=3,
    )
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sum(sizes) == 10 and max(sizes) == 4
    # Same seed, same order; the preprocessing is deterministic.
    again = task.client_dataset(
        task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0]),
        Preprocessing(batch_size=4, epochs=2, max_elements=5),
        seed=3,
    )
    for (x1, y1), (x2, y2) in zip(ds, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    report = tff_fedpt.resolve_freeze(task.models["cnn"](0), task.freeze_spec("cnn", "dense"))
    assert report.totals() == {"trainable": 25290, "frozen": 1050624, "total": 1075914}
    with pytest.raises(ValueError, match="unknown preset 'bogus'"):
        task.freeze_spec("cnn", "bogus")


def test_emnist_missing_data_message(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"looked for {tmp_path}/emnist_all.sqlite"):
        load_task("emnist", cache_dir=str(tmp_path))


def test_emnist_loads_tff_sqlite_format(tmp_path):
    fake_data.write_emnist(str(tmp_path))
    task = load_task("emnist", cache_dir=str(tmp_path))
    assert len(task.train_data.client_ids) == 4
    x, y = next(
        iter(
            task.client_dataset(
                task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0]),
                Preprocessing(batch_size=3),
                seed=0,
            )
        )
    )
    assert x.shape == (3, 28, 28, 1) and y.dtype == tf.int32
    model = task.models["cnn"](0)
    assert model.count_params() == 1206590
    digits_task = load_task("emnist", cache_dir=str(tmp_path), only_digits=True)
    assert digits_task.models["cnn"](0).count_params() == 1199882


def test_stackoverflow_missing_data_messages(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="stackoverflow.sqlite"):
        load_task("stackoverflow", cache_dir=str(tmp_path))
    fake_data.write_stackoverflow(str(tmp_path))
    (tmp_path / "datasets" / "stackoverflow.word_count").unlink()
    with pytest.raises(DatasetNotFoundError, match="word counts not found"):
        load_task("stackoverflow", cache_dir=str(tmp_path))


def test_stackoverflow_preprocessing_and_masked_accuracy(tmp_path):
    fake_data.write_stackoverflow(str(tmp_path))
    task = load_task("stackoverflow", cache_dir=str(tmp_path), vocab_size=5)
    ids = stackoverflow.special_ids(5)
    assert ids == {"pad": 0, "oov": 6, "bos": 7, "eos": 8}
    to_ids = stackoverflow.build_to_ids(["the", "a", "to", "is", "how"])
    ds = tf.data.Dataset.from_tensor_slices({"tokens": ["the python a", " ".join(["to"] * 30)]})
    (x1, y1), (x2, y2) = list(to_ids(ds))
    # bos the OOV a eos pad...: x = tokens[:-1], y = tokens[1:].
    np.testing.assert_array_equal(x1[:5], [7, 1, 6, 2, 8])
    np.testing.assert_array_equal(y1[:4], [1, 6, 2, 8])
    assert x1.shape == (20,) and int(tf.reduce_sum(x1[5:])) == 0
    # A long sentence is cut to 20 tokens: no eos fits.
    assert 8 not in x2.numpy().tolist() + y2.numpy().tolist()
    metric = stackoverflow.MaskedAccuracy(masked_ids=(0, 6, 7, 8))
    logits = tf.one_hot([[1, 2, 3, 0, 5]], 9)
    metric.update_state(tf.constant([[1, 6, 4, 0, 5]]), logits)
    # Counted positions: y=1 (right), y=4 (wrong), y=5 (right); 6 and 0 are masked.
    assert float(metric.result()) == pytest.approx(2 / 3)
    x, y = next(
        iter(
            task.client_dataset(
                task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0]),
                Preprocessing(batch_size=2),
                seed=0,
            )
        )
    )
    assert x.shape == (2, 20) and y.shape == (2, 20)
    lstm = task.models["lstm"](0)
    assert lstm.output_shape == (None, 20, 9)
    for model, preset in (("lstm", "recurrent"), ("transformer", "attention")):
        tff_fedpt.from_keras_model(
            task.models[model](0),
            loss=task.loss_fn(),
            input_spec=task.input_spec,
            metrics=task.metrics_fn(),
            freeze=task.freeze_spec(model, preset),
        )


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'mnist'; valid tasks"):
        load_task("mnist")
