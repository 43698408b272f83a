# config/tiny.py made small enough for a CPU: about 5 minutes on 2 cores, and a model that has learned something
# (the validation NLL falls from ~10.6 to ~6; it writes words, not yet stories). Stack it on tiny.py:
#   python train.py config/tiny.py config/cpu.py --data_source=DIR
#   python sample.py --init_from out/tiny-cpu --prompt "Once upon a time, there was a little cat."
device = "cpu"
compile = False  # compiling works on the CPU with a C++ compiler, but its warm-up costs more than it saves here
out_dir = "out/tiny-cpu"
n_layer = 4
n_head = 4
d_model = 128
mlp_hidden = 384
block_size = 256
batch_size = 8
max_iters = 300
eval_interval = 100
eval_iters = 4  # 4 x 8 x 256 validation tokens: seconds, where tiny.py's 20 x 16 x 1024 would take minutes
warmup_iters = 20
learning_rate = 3e-3
min_lr = 3e-4
