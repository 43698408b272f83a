# The control: dllm_var with EOS masked at rate t like any other token (isolates fixed EOS masking).
recipe = "eos_random"
t_min = 0.1
t_max = 0.9
loss_weighting = "mean"
