# The recipe study on TinyStories, stage 1: a masked-diffusion base (recipe pretrain: every token maskable,
# 1/t-weighted ELBO, t over (0, 1]); the AR baseline's base is this file + config/recipes/ar.py.
#   python train.py config/study/tinystories_base.py --data_source=DIR --out_dir=out/study-tinystories/base
# DIR: a folder of local text such as ../shared/data/tinystories (train.txt.gz, valid.txt.gz, and extra/*.txt.gz
# read as more training text): 20,983 stories, about 4.19M training tokens.
# 1000 x 16 x 1024 = 16.4M token positions: about 3.9 passes over those 4.19M tokens.
dataset = "tinystories"
recipe = "pretrain"
model = "gpt2"
block_size = 1024  # 99.9% of stories fit in one row (eos_pad needs that); 512-token canvases stay inside it
batch_size = 16
max_iters = 1000
eval_interval = 250
eval_iters = 10
t_min = 1e-3
t_max = 1.0
loss_weighting = "elbo"
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 100
keep_checkpoints = 1  # a study holds ~20 runs; at the gpt2 preset a checkpoint is ~2 GB (weights + AdamW state)
