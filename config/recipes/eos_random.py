# The control: dllm_var with EOS masked at rate t like any other token (isolates fixed EOS masking).
recipe = "eos_random"
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base; from scratch a model would almost
t_max = 0.9  # never see a fully masked answer, the state every sampler starts from: pass --t_min=0.001 --t_max=1
loss_weighting = "mean"
