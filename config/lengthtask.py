# The recipe study on the length task suite (nanodllm/tasks.py): the prompt fixes the answer, so EOS has one
# right place. Stack a recipe on top:  python train.py config/lengthtask.py config/recipes/dllm_var.py
dataset = "lengthtask"
data_seed = 0  # the examples (and so the held-out prompts) are the same for every training seed
model = "tiny"
# Rows of 640: the longest prompt (~160 tokens) plus a 256-token evaluation canvas, or plus the longest answer
# (~300), stays inside the trained positions (the model's context is its row length).
block_size = 640
batch_size = 16
# Packing (nanodllm/data.py): "stream", as dLLM-Var packs. At 640-token rows 21% of the training tokens belong
# to samples cut by a row boundary (42% at 320), trained without the prompt that fixes their length. "best_fit"
# keeps them whole (0.4% padding) but is no cure: rows then often end exactly at an EOS, and the row-scope
# dllm_var model learned "EOS goes at the end of what I see" (the EOS block probe, H200, tiny from scratch:
# EOS at the block's end in 72-90% of blocks of 8-32 where it did not belong, 0-3% with stream packing). The
# block_diffusion recipe is the layout built to give neither cue.
packing = "stream"
max_iters = 3000
eval_interval = 1000
eval_iters = 20
learning_rate = 1e-3  # 2e-3 sent eos_pad to NaN at step 180; every recipe gets the same
min_lr = 1e-4
warmup_iters = 100
