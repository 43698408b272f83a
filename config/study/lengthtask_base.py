# The recipe study on the length suite, stage 1: a masked-diffusion base, pretrained as LLaDA pretrains
# (recipe pretrain: packed documents, every token maskable, 1/t-weighted ELBO, t over (0, 1]). Every diffusion
# recipe is then fine-tuned from this one base (lengthtask_sft.py); the AR baseline gets its own causal base
# from this file with config/recipes/ar.py stacked on top, the same rows x length x steps.
#   python train.py config/study/lengthtask_base.py --out_dir=out/study-lengthtask/base
# study.py runs both stages for every recipe and seed: python study.py --dataset=lengthtask
#
# The suite's data is generated (nanodllm/tasks.py): 200,000 training examples, about 10.6M tokens. This stage
# trains on 4000 x 16 x 640 = 41M token positions, about 3.9 passes over them.
dataset = "lengthtask"
recipe = "pretrain"
model = "gpt2"  # 12 layers, 12 heads, width 768 (124M + 38.6M embedding)
block_size = 640  # the longest prompt (~160 tokens) + a 320-token canvas fit in the trained positions
batch_size = 16
max_iters = 4000
eval_interval = 1000
eval_iters = 10
t_min = 1e-3  # t ~ U(0.001, 1): fully masked answers are seen, as every sampler's first pass starts from one
t_max = 1.0
loss_weighting = "elbo"
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
keep_checkpoints = 1  # a study holds ~20 runs; at the gpt2 preset a checkpoint is ~2 GB (weights + AdamW state)
