# The recipe study on TinyStories: prompt = a story's first sentence, response = the rest + EOS.
# Stack a recipe on top:  python train.py config/tinystories_sft.py config/recipes/dllm_var.py
# Every recipe sees the same rows x length x steps (16,384 token positions per step), from the same seed.
dataset = "tinystories"
model = "tiny"
block_size = 1024  # 99.9% of stories fit in one row (the eos_pad recipe needs that), and the samplers'
batch_size = 16  # 1024-token canvases stay within the trained positions
# Packing: "stream" as dLLM-Var (25% of the training tokens belong to stories cut by a row boundary); "best_fit"
# keeps them whole (3.1% padding) but teaches an end-of-row cue: see config/lengthtask.py.
packing = "stream"
max_iters = 4000
eval_interval = 500
eval_iters = 20
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
