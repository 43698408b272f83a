# The recipe study on TinyStories: prompt = a story's first sentence, response = the rest + EOS.
# Stack a recipe on top:  python train.py config/tinystories_sft.py config/recipes/dllm_var.py
# Every recipe sees the same rows x length x steps (16,384 token positions per step), from the same seed.
dataset = "tinystories"
model = "tiny"
block_size = 1024  # 99.9% of stories fit in one row (the eos_pad recipe needs that), and the samplers'
batch_size = 16  # 1024-token canvases stay within the trained positions
# Samples kept whole (nanodllm/data.py): "stream" packing cuts 25% of the training tokens' stories at a row
# boundary, training their ends and EOS without the first sentence; best_fit costs 3.1% in padding.
packing = "best_fit"
max_iters = 4000
eval_interval = 500
eval_iters = 20
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
