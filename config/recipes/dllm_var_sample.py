# dLLM-Var's recipe with sample-scoped attention, the packing ablation: each token attends only to its own sample
# (prompt + response + EOS), so the next prompt after an EOS is no cue; the end of what a token sees is one instead.
recipe = "dllm_var"
attention_scope = "sample"
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base
t_max = 0.9
loss_weighting = "mean"
