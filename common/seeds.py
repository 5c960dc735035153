"""Named seeds and stream offsets: every fixed draw of the project in one place, so that runs,
evaluations and figures agree on them and no number is chosen twice for different things."""

# Latents of the traversal grids (training, evaluation, edit tool): the same in every run.
TRAVERSAL_SEED = 20201
# Latents of the GAN pretraining sample grids.
PRETRAIN_SAMPLE_SEED = 1234
# Draws of the mean w of a style-based generator whose file stores none.
W_AVG_SEED = 0

# Salts of a batch's own draws (``DirectionModule.batch_rng``): training, validation, and the
# end-of-fit analyses draw from the same batch seed without sharing draws.
TRAIN_SALT, VALIDATION_SALT, ANALYSIS_SALT = 0, 1, 2

# Stream positions (``datamodules.streams.batch_seed(seed, step, rank)``) reserved for held-out
# draws; training batches use steps 0, 1, 2, ...
HELD_OUT_STEP = -1               # the datamodules' validation batches (rank -1: one set for all)
RCA_EVAL_FIRST_STEP = -1         # metrics/rca.py: held-out shifts -1, -2, ...
RCA_VALIDATION_FIRST_STEP = -10_000   # metrics/rca.py: the stopping rule's shifts -10000, -10001, ...
EVALUATION_FIRST_STEP = -100     # metrics/evaluation.py: evaluation latents -100, -101, ...

# Fit-free methods: InterFaceGAN's train / validation split of the extremes; GANSpace's fixed
# subset of feature coordinates when a layer has more than max_features.
SPLIT_SEED = 70_30
FEATURE_SUBSET_SEED = 0
