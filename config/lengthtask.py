# The recipe study on the length task suite (nanodllm/tasks.py): the prompt fixes the answer, so EOS has one
# right place. Stack a recipe on top:  python train.py config/lengthtask.py config/recipes/dllm_var.py
dataset = "lengthtask"
model = "tiny"
block_size = 320  # the longest task document is about 310 tokens
batch_size = 32
max_iters = 3000
eval_interval = 1000
eval_iters = 20
learning_rate = 1e-3  # 2e-3 sent eos_pad to NaN at step 180; every recipe gets the same
min_lr = 1e-4
warmup_iters = 100
