"""Property tests of predict over inputs nobody would pick by hand (hypothesis).

Every generated input either comes back at exactly scale x its size, in its own storage type and unit,
with its holes where they were, or is refused with one `error:` line and nothing written. A clearly valid
input (a positive float or 8-bit map of any size) must come back.
"""
import contextlib
import io
import pathlib

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import pytest

from dsr_jax import depth_io
from dsr_jax import predict

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('fast_xla')]
SCALE = 2  # configs/test.py, the `ckpt` fixture

STORAGE = ('png8', 'png16', 'float32', 'float64', 'int32', 'bool', 'float32_hw1', 'float32_hw3', 'float32_1d')
VALUES = ('random', 'nan', 'inf', 'negative', 'zero', 'constant', 'tiny', 'huge')

shapes = st.one_of(
    st.sampled_from([(1, 1), (1, 7), (9, 1), (2, 300), (3, 129)]),
    st.tuples(st.integers(1, 40), st.integers(1, 40)))


def _values(kind: str, shape, rng) -> np.ndarray:
  a = rng.uniform(0.2, 0.9, shape)
  if kind == 'nan':
    a[rng.random(shape) < 0.3] = np.nan
  elif kind == 'inf':
    a[rng.random(shape) < 0.3] = np.inf
  elif kind == 'negative':
    a[rng.random(shape) < 0.5] *= -1
  elif kind == 'zero':
    a[:] = 0
  elif kind == 'constant':
    a[:] = 0.5
  elif kind == 'tiny':
    a *= 1e-30
  elif kind == 'huge':
    a *= 1e30
  return a


def _write(path_stem: pathlib.Path, storage: str, a: np.ndarray) -> pathlib.Path:
  if storage in ('png8', 'png16'):
    top = 255 if storage == 'png8' else 65535
    b = np.clip(np.round(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0) * top), 0, top)
    b = b.astype(np.uint8 if storage == 'png8' else np.uint16)
    path = path_stem.with_suffix('.png')
    Image.fromarray(b).save(path)
    return path
  dtype = {'float32': np.float32, 'float64': np.float64, 'int32': np.int32, 'bool': bool}.get(storage, np.float32)
  with np.errstate(invalid='ignore', over='ignore'):
    b = (np.nan_to_num(a * 1000, nan=0, posinf=0, neginf=0).astype(dtype) if dtype in (np.int32, bool)
         else a.astype(dtype))
  if storage == 'float32_hw1':
    b = b[..., None]
  elif storage == 'float32_hw3':
    b = np.repeat(b[..., None], 3, axis=-1)
  elif storage == 'float32_1d':
    b = b.reshape(-1)
  path = path_stem.with_suffix('.npy')
  np.save(path, b)
  return path


def _holes(stored: np.ndarray) -> np.ndarray:
  if np.issubdtype(stored.dtype, np.floating):
    with np.errstate(invalid='ignore'):
      return ~(np.isfinite(stored) & (stored > 0))
  return stored <= 0


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=shapes, storage=st.sampled_from(STORAGE), values=st.sampled_from(VALUES),
       tile=st.sampled_from([0, predict.MIN_TILE, 24, 512]), seed=st.integers(0, 2**16))
def test_predict_writes_scale_times_the_input_or_one_line(ckpt, tmp_path_factory, shape, storage, values, tile,
                                                          seed):
  case = tmp_path_factory.mktemp('prop')
  path = _write(case / 'in', storage, _values(values, shape, np.random.default_rng(seed)))
  out = case / 'out'
  argv = ['--checkpoint', str(ckpt), '--input', str(path), '--output', str(out), '--tile', str(tile)]
  if storage == 'png16':
    argv += ['--norm', '65535']
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    rc = predict.main(argv)
  lines = err.getvalue().strip().splitlines()
  stored = np.load(path) if path.suffix == '.npy' else np.asarray(Image.open(path))
  valid_float = (storage in ('float32', 'float64', 'float32_hw1') and values in ('random', 'constant', 'nan', 'inf',
                                                                              'negative'))
  valid = valid_float or (storage == 'png8' and values not in ('zero',))
  if rc == 2:
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())  # nothing written
    assert not valid or _holes(stored).all(), f'a valid input was refused: {lines[0]}'
    return
  assert rc == 0 and not lines, (rc, lines)
  result = out / f'in_x{SCALE}{path.suffix}'
  got = np.load(result) if result.suffix == '.npy' else np.asarray(Image.open(result))
  # Exactly scale x the size, the input's shape convention (a trailing axis of 1 kept) and storage type.
  want_shape = (SCALE * stored.shape[0], SCALE * stored.shape[1]) + stored.shape[2:]
  assert got.shape == want_shape and got.dtype == stored.dtype, (got.shape, got.dtype, stored.shape, stored.dtype)
  s2 = stored.reshape(stored.shape[:2])
  g2 = got.reshape(got.shape[:2])
  holes = np.repeat(np.repeat(_holes(s2), SCALE, 0), SCALE, 1)
  # Holes stay holes (0, or NaN where the input had NaN); every other pixel is a positive finite depth in
  # the input's unit: within the range of the input's valid values, with room for the network's overshoot.
  assert (np.nan_to_num(g2[holes], nan=0) == 0).all()
  v = g2[~holes].astype(np.float64)
  assert np.isfinite(v).all() and (v > 0).all()
  lo, hi = s2[~_holes(s2)].min(), s2[~_holes(s2)].max()
  span = float(hi) - float(lo)
  assert np.median(v) >= float(lo) - span - 0.5 * abs(float(lo)) and np.median(v) <= float(hi) + span + 0.5 * abs(
      float(hi)), (np.median(v), lo, hi)


# ------------------------------------------------------------------------------------------ issue 37
# Files that decode but are not what they claim, and config fields that reach JAX unchecked: properties over
# every byte of a file and every field of configs/default.py (in-process, no checkpoint, fast).


def _png_file(tmp_path, bits: int, seed: int) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  a = rng.integers(1, 2 ** bits, (9, 13)).astype(np.uint8 if bits == 8 else np.uint16)
  path = tmp_path / f'd{bits}_{seed}.png'
  Image.fromarray(a).save(path)
  return path


def _refused(path) -> str:
  from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError) as e:
    depth_io.read_depth(path)
  assert str(path) in str(e.value) and '\n' not in str(e.value)
  return str(e.value)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([8, 16]), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255),
       cut=st.booleans())
def test_a_changed_or_cut_png_is_refused(tmp_path, bits, where, mask, cut):
  """Every single-byte change and every truncation of a PNG is refused (Pillow decodes many of them: it
  skips the image data's CRCs and zero-fills missing rows)."""
  path = _png_file(tmp_path, bits, 0)
  data = path.read_bytes()
  at = int(where * len(data))
  bad = tmp_path / 'bad.png'
  bad.write_bytes(data[:at] if cut else data[:at] + bytes([data[at] ^ mask]) + data[at + 1:])
  _refused(bad)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(['<f4', '>f8', '<u2', '<i4']), extra=st.integers(-40, 40).filter(bool),
       fortran=st.booleans())
def test_a_npy_whose_size_disagrees_with_its_header_is_refused(tmp_path, dtype, extra, fortran):
  """A .npy cut short or with bytes its header does not declare is refused before np.load allocates."""
  a = np.asarray(np.random.default_rng(0).uniform(1, 2, (6, 7)), dtype=dtype)
  path = tmp_path / 'd.npy'
  np.save(path, np.asfortranarray(a) if fortran else a)
  assert depth_io.read_depth(path)[0].shape == (6, 7)  # as saved: read
  data = path.read_bytes()
  path.write_bytes(data[:extra] if extra < 0 else data + bytes(extra))
  _refused(path)


def _default_leaves():
  from dsr_jax import config_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax.configs import default  # pylint: disable=g-import-not-at-top
  return dict(config_lib._leaves(default.get_config()))  # pylint: disable=protected-access


def _with(field: str, value):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dsr_jax.configs import test as test_config  # pylint: disable=g-import-not-at-top
  raw = test_config.get_config().to_dict()
  node = raw
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  return ml_collections.ConfigDict(raw)  # a config file can hold what an override could not


def _wrong_values(ref):
  if isinstance(ref, bool):
    return ['False', 0]  # a string is always true; 0 is no bool
  if isinstance(ref, int):
    return [2 ** 31, 1.5, True]
  if isinstance(ref, float):
    return ['0.1', None]
  if isinstance(ref, str):
    return [1]
  if isinstance(ref, tuple):
    return ['32x32', (32,)]
  return []


@pytest.mark.parametrize('field', sorted(_default_leaves()))
def test_every_config_field_is_validated(field):
  """Every field of configs/default.py, given a value of the wrong type or an integer beyond int32, is refused
  by each mode's checks (train.check_config, eval_config.check) with a ConfigError naming it, before any data
  or JAX work."""
  from dsr_jax import eval_config  # pylint: disable=g-import-not-at-top
  from dsr_jax import train  # pylint: disable=g-import-not-at-top
  from dsr_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  ref = _default_leaves()[field]
  for value in _wrong_values(ref):
    config = _with(field, value)
    for mode in ('train', 'eval'):
      if mode == 'eval':
        config.eval.checkpoint_dir = config.eval.checkpoint_dir or 'x'
        if field == 'eval.checkpoint_dir':
          continue
      with pytest.raises(ConfigError) as e:
        (train.check_config if mode == 'train' else eval_config.check)(config)
      assert str(e.value).startswith(f'{field}='), (field, value, str(e.value))
