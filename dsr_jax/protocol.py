"""How a dataset is scored (each DatasetSpec in input_pipeline/readers.py holds one, readers.PROTOCOLS maps the
names; dsr_jax/metrics.py applies it), and what else eval mode scores against."""
import dataclasses

from dsr_jax import resize

BASELINES = ('', 'bicubic')  # eval.baseline: '' = the checkpoint's network
PAPER_SCALES = resize.SCALES  # the scales of the paper's tables (eval's model.scale, 0 = the checkpoint's)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How one dataset is scored.

  Attributes:
    unit: protocol unit of every metric.
    factor: dataset unit -> protocol unit.
    border: HR pixels removed on each side before scoring.
    crop_multiple: crop the HR to a multiple of s before degrading it.
    round_uint8: clip the prediction to [0, 255] and round it (Middlebury 2005).
    all_pixels: score every pixel (else valid GT pixels only).
    reference: where the protocol comes from.
  """
  unit: str
  factor: float
  border: int = 0
  crop_multiple: bool = False
  round_uint8: bool = False
  all_pixels: bool = False
  reference: str = ''
