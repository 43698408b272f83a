# dLLM-Var: packed samples, prompt never masked, every EOS always masked, t ~ U(0.1, 0.9), plain mean CE.
recipe = "dllm_var"
t_min = 0.1
t_max = 0.9
loss_weighting = "mean"
