# The recipe study on the length task suite (nanodllm/tasks.py): the prompt fixes the answer, so EOS has one
# right place. Stack a recipe on top:  python train.py config/lengthtask.py config/recipes/dllm_var.py
dataset = "lengthtask"
model = "tiny"
block_size = 320  # the longest task document is about 310 tokens
batch_size = 32
max_iters = 1500
eval_interval = 500
eval_iters = 20
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
