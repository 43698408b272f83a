# config/tiny.py made small enough for a CPU: 5 minutes on 2 cores (about 2,200 tokens/s), enough to watch it learn
# (validation NLL 10.6 -> 6.0), not enough to write stories or to stop by itself: it writes "the... the... day",
# the most common tokens. Stories and EOS take config/tiny.py on a GPU. Stack it on tiny.py:
#   python train.py config/tiny.py config/cpu.py --data_source=DIR
#   python sample.py --init_from out/tiny-cpu --prompt "Once upon a time, there was a little cat." --max_new_tokens 64
#   python eval_eos.py --init_from out/tiny-cpu --data tinystories --num_samples 20 --samplers block --device cpu
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
