# Block diffusion (BD3-LM's layout) with dLLM-Var's masking: the row in blocks of attn_block_size, trained as
# [noisy row ; clean row] so that a noisy block sees only itself and the clean blocks before it, as the block
# sampler's exact KV cache shows them. Every EOS always masked, plain mean CE, as dllm_var.
recipe = "block_diffusion"
attn_block_size = 32  # the sampler decodes in these blocks
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base; from scratch a model would almost
t_max = 0.9  # never see a fully masked answer, the state every sampler starts from: pass --t_min=0.001 --t_max=1
loss_weighting = "mean"
