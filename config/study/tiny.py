# study.py --tiny: the study's pipeline on the CPU in seconds (tests, a dry run of the commands). Stacked after
# the stage's config and the recipe: a two-layer model, a few steps of a few short rows. Numbers mean nothing.
model = "tiny"
n_layer = 2
n_head = 2
d_model = 64
mlp_hidden = 128
block_size = 160  # the length suite's longest held-out prompts (~130 tokens) + 16 new tokens; whole blocks of 32
batch_size = 4
max_iters = 4
eval_interval = 2
eval_iters = 1
log_interval = 1
warmup_iters = 1
device = "cpu"
compile = False
keep_checkpoints = 2  # not the study's 1: tests/test_study.py steps a run back to its previous checkpoint
