# The recipe study on the length suite, stage 2: fine-tune the base of lengthtask_base.py with a recipe.
# Stack a recipe on top and start from the base's weights (its latest checkpoint; the optimizer starts fresh):
#   python train.py config/study/lengthtask_sft.py config/recipes/dllm_var.py \
#       --init_from=out/study-lengthtask/base --seed=0 --out_dir=out/study-lengthtask/runs/dllm_var-s0
# The recipe file sets what is masked, t's range ([0.1, 0.9] for dLLM-Var's fine-tuning) and the weighting;
# --seed sets this fine-tune's data order and masks (the base is shared by every seed).
# 1000 x 16 x 640 = 10.2M token positions: about one pass over the suite's 10.6M training tokens.
dataset = "lengthtask"
model = "gpt2"
block_size = 640
batch_size = 16
max_iters = 1000
eval_interval = 500
eval_iters = 10
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 50
keep_checkpoints = 1  # a study holds ~20 runs; at the gpt2 preset a checkpoint is ~2 GB (weights + AdamW state)
