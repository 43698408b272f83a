# dLLM-Var: packed samples, prompt never masked, every EOS always masked, t ~ U(0.1, 0.9), plain mean CE.
recipe = "dllm_var"
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base; from scratch a model would almost
t_max = 0.9  # never see a fully masked answer, the state every sampler starts from: pass --t_min=0.001 --t_max=1
loss_weighting = "mean"
