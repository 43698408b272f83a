# A tiny masked-diffusion LM with LLaDA's pretraining objective on TinyStories (the README's training curve):
# a few minutes on one GPU. It has no prompts, so it never learns to stop: config/tiny.py is the quick start.
# python train.py config/tiny_pretrain.py   (add --data_source=DIR to read local text files instead of the hub)
dataset = "tinystories"
out_dir = "out/tiny-pretrain"
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
