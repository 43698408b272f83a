# A tiny masked-diffusion LM (LLaDA pretraining objective) on TinyStories: a few minutes on one GPU.
# python train.py config/tiny.py   (add --data_source=DIR to read local text files instead of the hub)
dataset = "tinystories"
out_dir = "out/tiny"
recipe = "pretrain"
model = "tiny"  # 6 layers, 6 heads, width 384
block_size = 256
batch_size = 64
max_iters = 2000
eval_interval = 250
eval_iters = 20
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
