# The recipe study on TinyStories, stage 2: fine-tune the base of tinystories_base.py with a recipe.
#   python train.py config/study/tinystories_sft.py config/recipes/dllm_var.py --data_source=DIR \
#       --init_from=out/study-tinystories/base --seed=0 --out_dir=out/study-tinystories/runs/dllm_var-s0
# 500 x 16 x 1024 = 8.2M token positions: about 2 passes over the 4.19M local training tokens (3.9 more were
# seen by the base). The data is small: the AR model overfits it first (README), so keep the passes few.
dataset = "tinystories"
model = "gpt2"
block_size = 1024
batch_size = 16
max_iters = 500
eval_interval = 250
eval_iters = 10
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 50
keep_checkpoints = 1  # a study holds ~20 runs; at the gpt2 preset a checkpoint is ~2 GB (weights + AdamW state)
