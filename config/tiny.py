# The quick start: a tiny masked-diffusion model on TinyStories that learns where to stop (dLLM-Var's recipe),
# a few minutes on one GPU; on a CPU stack config/cpu.py on top. Then sample from it and measure where it stops:
#   python train.py config/tiny.py             (add --data_source=DIR to read local text files instead of the hub)
#   python sample.py --init_from out/tiny --prompt "Once upon a time, there was a little cat."
#   python eval_eos.py --init_from out/tiny --data tinystories
# The recipe of config/recipes/dllm_var.py, each sample attending only to itself: seeing the whole packed row,
# the study's models learned to put EOS before the next prompt and rarely stopped by themselves; attending
# within the sample, they stopped on 95-100% of TinyStories prompts (nanodllm/recipes.py, attention_scope), though
# often at the end of a block, a shortcut the EOS block probe of eval_eos.py shows (docs/study.md).
dataset = "tinystories"
out_dir = "out/tiny"
recipe = "dllm_var"
t_min = 0.001  # from scratch, t over (0, 1]: the model must see fully masked answers, where every sampler starts
t_max = 1.0
loss_weighting = "mean"
attention_scope = "sample"
model = "tiny"  # 6 layers, 6 heads, width 384
block_size = 1024  # whole stories, and the sampler's canvas stays within the trained positions
batch_size = 16
max_iters = 2000
eval_interval = 250
eval_iters = 20
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
