# The gpt2 preset (12 layers, 12 heads, width 768) as a masked-diffusion LM on FineWeb, 1024-token rows.
# python train.py config/gpt2.py   (add --data_source=FILE_OR_DIR to read local text files instead of the hub)
dataset = "fineweb"
out_dir = "out/gpt2"
recipe = "pretrain"
model = "gpt2"
block_size = 1024
batch_size = 32
gradient_accumulation_steps = 4  # 131k tokens per step on one GPU
max_iters = 5000
eval_interval = 500
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
