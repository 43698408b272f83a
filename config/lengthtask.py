# The recipe study on the length task suite (nanodllm/tasks.py): the prompt fixes the answer, so EOS has one
# right place. Stack a recipe on top:  python train.py config/lengthtask.py config/recipes/dllm_var.py
dataset = "lengthtask"
data_seed = 0  # the examples (and so the held-out prompts) are the same for every training seed
model = "tiny"
# Rows of 640: the longest prompt (~160 tokens) plus a 256-token evaluation canvas, or plus the longest answer
# (~300), stays inside the trained positions (the model's context is its row length).
block_size = 640
batch_size = 16
# Samples kept whole (nanodllm/data.py): with "stream" packing 21% of the training tokens (42% at 320-token rows)
# belong to samples cut by a row boundary, whose response and EOS are trained without the prompt that fixes their
# length; best_fit costs 0.4% of the tokens in padding (measured on the suite's training split).
packing = "best_fit"
max_iters = 3000
eval_interval = 1000
eval_iters = 20
learning_rate = 1e-3  # 2e-3 sent eos_pad to NaN at step 180; every recipe gets the same
min_lr = 1e-4
warmup_iters = 100
