"""Default config: every key lives here, documented. Other configs import this and override.

CPU-friendly: synthetic RGB-D scenes (no download), small DSRNet (T=4), x4. On the 2-core CI machine it
trains in well under ten minutes and its validation MAD beats bicubic.
"""
import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  # Seeds parameter init, the training pipeline (shuffle, crops, flips, the LR's degradation and noise) and the
  # noise of the protocol's LR in evaluation (named eval degradations use degradation.EVAL_SEED).
  c.seed = 0
  c.mode = 'train'  # 'train' or 'eval' (eval restores DSRNet from eval.checkpoint_dir).
  # XLA:CPU convolution library for our compiled programs: 'eigen' (faster here, see BENCHMARKS.md) or
  # 'ynnpack' (XLA's default). Ignored on GPU/TPU.
  c.cpu_convolutions = 'eigen'

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  d.name = 'synthetic_rgbd'  # synthetic_rgbd | middlebury_lu | middlebury2005 | rgbdd | nyu_v2 (or 'a+b' mixes).
  d.dir = ''  # Root of the manual data directory (layout of ../shared/data); '' -> $DSR_DATA_DIR.
  d.tfds_dir = ''  # Where prepared TFDS ArrayRecords live; '' -> read the manual dir directly (in memory).
  d.crop = 48  # HR training crop (pixels); must be a multiple of model.scale.
  d.augment = True  # Random flips and 90-degree rotations of the paired crop.
  # LR degradation: 'bicubic' (MATLAB imresize, antialiased: the paper's protocol) | 'nearest' | 'box', or
  # 'random': a degradation drawn per crop from data.random.* (docs/method.md, "Degradations").
  d.degrade = 'bicubic'
  d.noise_sigma = 0.0  # Gaussian noise std added to the LR, in the dataset's depth units (noisy-DSR).
  # data.degrade='random' only. Each crop: with probability `clean` the protocol's LR exactly; otherwise a
  # resampler from `resamplers` at a uniform sub-pixel offset within +-`offset` HR pixels (point sampling:
  # any pixel of the block), a Gaussian blur before it (probability `blur`, std `blur_sigma` HR pixels),
  # Gaussian noise (`noise`, std `noise_sigma` in 8-bit levels of the normalised range), depth-proportional
  # noise (`tof`, std `tof_sigma` x depth), an 8- or 16-bit file's grid (`bits8`, `bits16`) and holes
  # (`holes`, a `hole_frac` of the LR pixels) filled with the nearest valid value as predict fills them.
  # Each part is drawn independently. Ranges are (low, high), drawn uniformly.
  d.random = r = ml_collections.ConfigDict()
  r.clean = 0.25
  r.resamplers = 'bicubic,bicubic_noaa,bilinear,bilinear_noaa,area,point'
  r.offset = 0.5
  r.blur = 0.25
  r.blur_sigma = (0.3, 1.5)
  r.noise = 0.5
  r.noise_sigma = (0.2, 3.0)
  r.tof = 0.2
  r.tof_sigma = (0.002, 0.02)
  r.bits8 = 0.5
  r.bits16 = 0.2
  r.holes = 0.1
  r.hole_frac = (0.0, 0.03)
  # The LR that validation scores (and so the best checkpoint): a comma list of degradation.EVAL_CHOICES
  # ('protocol' = data.degrade as the paper's protocol makes it; 'robust' = every row of the robustness
  # table). Each validation image is scored once per name, at a fixed seed.
  d.val_degradations = 'protocol'
  d.lr_on_device = False  # Make the LR inside the jitted step instead of on the host (see BENCHMARKS.md).
  d.workers = 0  # grain mp_prefetch worker processes (0 = in-process).
  d.prefetch = 2  # Batches prefetched to device ahead of the step.
  d.eval_batch = 1  # Whole-image eval batch size (padded so every image counts once).
  d.val_split = 'validation'  # Split used for periodic validation during training.
  d.val_name = ''  # Dataset(s) validated on during training ('' = data.name); picks the best checkpoint.
  d.min_valid = 0.5  # A training crop with fewer valid depth pixels than this fraction is re-drawn.
  d.crop_tries = 10  # Re-draws per example before the best crop found is kept.
  d.min_edge = 0.0  # (choice) Re-draw crops with fewer depth-edge pixels than this fraction (0 = off).
  d.edge_step = 0.01  # A depth-edge pixel: a jump above this (normalised depth) to its right/lower neighbour.
  # synthetic_rgbd only
  d.synthetic = ml_collections.ConfigDict()
  d.synthetic.num_train = 256  # Number of distinct procedural train scenes.
  d.synthetic.num_val = 8  # Validation scenes (disjoint seeds).
  d.synthetic.size = (128, 128)  # HR size (H, W) of each scene.

  # ---------------------------------------------------------------- model
  c.model = m = ml_collections.ConfigDict()
  m.name = 'dsrnet'  # The SR network, by its name in dsr_jax.models.REGISTRY.
  m.scale = 4  # Upsampling factor s in {2, 4, 8, 16}.
  m.channels = 16  # C: back-projection channels (paper 64).
  m.feat = 32  # F: shallow-feature width (paper 256).
  m.stages = 4  # T: back-projection stages of DSRNet / residual stages of DENet (paper preset 7).
  m.de_blocks = 2  # R: residual blocks per DENet stage.
  m.residual = True  # (choice) add bicubic upsampling of the LR to DSRNet's output.
  # Back-projection conv form: 'polyphase' (fast on CPU) | 'reference' (nn.ConvTranspose-style) | 'auto' = the
  # backend's: polyphase everywhere until a GPU/TPU measurement says otherwise (models.auto_bp_impl).
  m.bp_impl = 'auto'
  # Compute dtype: 'float32' | 'bfloat16' | 'auto' = bfloat16 on GPU/TPU, float32 on CPU (models.auto_dtype).
  # Params and optimizer stay float32. A run resolves 'auto' once; its checkpoints record what it used.
  m.dtype = 'auto'
  m.use_denet = True  # False = DSRNet alone ("w/o CT" ablation).
  m.use_spnet = True  # False = cross-task without SPNet.
  # docs/method.md, rule 1: DSRNet's side outputs D^n_sr carry the same bicubic global residual as its main
  # output (the first version's side heads had none).
  m.side_residual = True
  # docs/method.md, rule 5 (an extension beyond the paper): what DENet sees. 'rgb' = the paper's monocular
  # DENet; 'rgbd' = RGB plus the bicubic-upsampled LR depth (a colour-guided teacher, training time only).
  # Test time is DSRNet alone either way.
  m.teacher_input = 'rgb'
  m.teacher_residual = True  # 'rgbd' only: DENet adds the bicubic upsampled LR to its outputs, as DSRNet does.
  # docs/method.md, "Frozen teachers" (issue 39): a trained network that sees more than the LR teaches DSRNet.
  # '' = none | 'guided' (LR depth + the HR RGB through its own encoder) | 'ae' (an autoencoder of the HR
  # depth). The same names as model.name train such a teacher alone (model.use_denet=False); as model.teacher
  # it is loaded from model.teacher_checkpoint and frozen: forward pass only, no optimizer update.
  m.teacher = ''
  m.teacher_checkpoint = ''  # the teacher's training workdir (its best checkpoint) or a step directory
  m.teacher_width = 32  # (choice) W: the guided teachers' encoder and fusion width
  m.teacher_blocks = 2  # (choice) R: residual blocks at the LR grid after the fusion (0 = none)
  m.ae_rgb = False  # 'ae' only: the autoencoder also sees the HR RGB beside the HR depth

  # ---------------------------------------------------------------- losses
  c.loss = l = ml_collections.ConfigDict()
  l.ssim_lambda = 0.85  # (choice) lam in L_DE = lam (1 - SSIM)/2 + (1 - lam) L1.
  l.affinity_pool = 16  # (choice) P: features average-pooled to P x P before the affinity (paper-size 32).
  l.gamma = 1.0  # (choice) weight of the affinity term inside L_distill.
  l.rho1 = 0.1  # (choice) weight of the structure loss in the student objectives.
  l.rho2 = 0.1  # (choice) weight of L_distill in the student objectives.
  l.use_affinity = True  # False = CT without affinity distillation.
  # docs/method.md, rule 1: deep supervision of the side heads. L_DSR and L_DE add side_weight * (1/T) sum_n
  # mean|D^n - D_hr|, so the side outputs that L_O distils live in depth space (0 = the first version).
  l.side_weight = 1.0
  # docs/method.md, rule 3: 'cosine' = per-pixel L2-normalised pooled features, A = softmax(R R^T / tau),
  # L_A the per-row L1 between the two distributions (in [0, 2], so it does not shrink with P^2). 'raw' = the
  # first version, softmax(R R^T) and the mean over all entries, which is uniform (~1e-5) on small pooled
  # features.
  l.affinity = 'cosine'
  l.affinity_tau = 0.1  # 'cosine' only: softmax temperature.
  # docs/method.md, rule 4: SPNet's uncertainty branch sees stop_gradient(D) - D_hr, so L_struct cannot
  # reward a network for shaping its error like the depth edges; the features F^T still get SPNet's gradient.
  l.detach_uncertainty = True
  # With model.teacher only (docs/method.md, "Frozen teachers"); each term reaches DSRNet alone.
  # L_O from the teacher: mean|D_sr - D_t| + side_weight * (1/T) sum_n mean|D^n_sr - D^n_t| (0 = off).
  l.kd_out_weight = 0.1  # (choice) rho2's value
  # The feature term on the T feature maps (the same shapes in DSRNet and the teacher): 'l1' = mean |F - F_t|,
  # 'cosine' = mean of 1 - cos(F, F_t) per pixel (scale-free), 'none' = off.
  l.feature_distill = 'none'
  l.kd_feature_weight = 0.1  # (choice)
  l.kd_affinity_weight = 0.0  # L_A from the teacher (loss.affinity, affinity_pool, affinity_tau); 0 = off

  # ---------------------------------------------------------------- optimisation
  c.optim = o = ml_collections.ConfigDict()
  for net in ('dsr', 'denet', 'spnet'):
    o[net] = ml_collections.ConfigDict()
    o[net].lr = 4e-4  # Peak Adam learning rate.
    o[net].b1 = 0.9
    o[net].b2 = 0.999
    o[net].warmup_steps = 50  # Linear warm-up.
    # 'cosine' | 'constant'. The schedule runs on the net's own update count (it pauses while the net is
    # frozen) with a horizon of train.num_steps, so a net frozen part of the time (SPNet in stage 1, each
    # round's teacher) ends before the cosine's floor.
    o[net].schedule = 'cosine'
    o[net].grad_clip = 1.0  # Global-norm clip per network (0 disables).

  # ---------------------------------------------------------------- schedule
  c.train = t = ml_collections.ConfigDict()
  t.num_steps = 2000  # Total optimiser steps (stage 1 + stage 2).
  t.stage1_steps = 600  # Warm-up stage: both nets on their own losses.
  t.round_steps = 100  # Steps per role round in stage 2 (paper: one epoch).
  t.batch_size = 8  # Global batch (split over all devices and processes).
  # Fine-tuning: DSRNet starts from this trained checkpoint (a shipped name such as dsrnet_x4, a workdir or a
  # step directory) instead of a random init; '' = random. Read at the start only: a resume ignores it.
  t.init_from = ''
  # docs/method.md, rule 7: who learns from whom in stage 2. 'rule' = Algorithm 1 (the lower mean error of the
  # previous round teaches; ties go to DSRNet); 'fixed_denet' / 'fixed_dsr' = that net always teaches;
  # 'mutual' = each net is the other's student in every step (L_distill both ways, one more compiled step).
  # Under 'rule' DSRNet has taught in every round measured so far, so distillation never reaches it.
  t.roles = 'rule'
  # docs/method.md, rule 2: 'task' = the teacher keeps training on its own task loss (with side supervision)
  # and rho1 * L_struct, while L_distill reaches the student only (stop_gradient of the teacher's outputs).
  # 'frozen' = Algorithm 1 read literally: the teacher's parameters, Adam moments and count stay unchanged.
  t.teacher_update = 'task'
  # TensorBoard grad/<term>/<net>: the global norm of the gradient each weighted loss term sends into each
  # network, on the current batch at log steps (a separate jitted function; the train step is unchanged).
  t.grad_diagnostics = True
  t.log_every = 100  # Scalar summaries (the only routine host syncs of the loop).
  t.image_every = 500  # Image summaries.
  t.profile = False  # Capture a jax.profiler trace of a few steps into the workdir.
  t.distributed = False  # Call jax.distributed.initialize() (multi-host GPU/TPU).
  # Wall-clock limit for the whole run, in minutes (0 = none), counted from the process's start (start-up and
  # compilation included). At each log step (train.log_every) the run stops if the time spent plus what it
  # must still do would pass the limit: one more log interval (as long as the last one), the final validation
  # (as long as the last one; before any, as long as the start-up) and a checkpoint save (the slowest so
  # far); between log steps (one process only) without the interval. It stops as on SIGTERM, saving that
  # step, then runs the final validation and keeps the best checkpoint; exit status 0. The same command with
  # a larger budget resumes exactly.
  t.time_budget = 0.0

  # ---------------------------------------------------------------- evaluation
  c.eval = e = ml_collections.ConfigDict()
  e.every_steps = 500  # Periodic validation during training (0 = only at the end).
  e.checkpoint_dir = ''  # eval mode: a training workdir, an Orbax checkpoint dir or one step's dir.
  e.dataset = ''  # eval mode: dataset to evaluate ('' = data.name); split 'test'.
  e.baseline = ''  # eval mode: '' = the checkpoint's network; 'bicubic' = the baseline (no checkpoint).
  e.tile = 0  # Tile size for full-resolution inference (0 = whole image).
  e.overlap = 32  # Tile overlap (>= the receptive-field margin).
  e.ensemble = False  # 8-way flip/transpose self-ensemble.
  # eval mode: the LR of the benchmark. 'protocol' = the dataset's protocol (data.degrade); any other name of
  # degradation.EVAL_CHOICES makes it the way a user's file may have been made (at a fixed seed), and the
  # report is named after it (python -m dsr_jax.robustness runs them all).
  e.degradation = 'protocol'
  e.images = True  # eval mode: per-scene SR (16-bit PNG), colour and error maps, and a comparison figure.
  e.figure_scenes = 8  # eval mode: scenes in the comparison figure (the first N; each also gets a panel).

  # ---------------------------------------------------------------- checkpoints
  c.ckpt = k = ml_collections.ConfigDict()
  k.every_steps = 500  # Save every N steps and at the end.
  k.keep = 3  # Keep the last K checkpoints (plus the best by validation MAD).
  return c
