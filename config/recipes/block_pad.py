# Block diffusion with EOS fill: BD3-LM's two-stream layout (a noisy block sees itself and the clean blocks before
# it, as the block sampler's exact KV cache shows them), each sample filled with EOS up to the end of its block.
# Nothing is masked by rule: response, EOS and fill at rate t, so the masks say nothing about where the answer ends.
recipe = "block_pad"
attn_block_size = 32  # the sampler decodes in these blocks
packing = "best_fit"  # samples whole (no response without its prompt); block-causal attention never sees a row's end
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base; from scratch a model would almost
t_max = 0.9  # never see a fully masked answer, the state every sampler starts from: pass --t_min=0.001 --t_max=1
loss_weighting = "mean"
