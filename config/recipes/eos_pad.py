# LLaDA SFT: one sample per row, [prompt, response, EOS, EOS, ...]; the pads are targets too.
# For the DiffuGPT project's variant add --pad_token=pad --pad_masked_perc=0.1 --pad_anneal_steps=500.
recipe = "eos_pad"
pad_token = "eos"
t_min = 0.1  # dLLM-Var's range for fine-tuning a pretrained base; from scratch a model would almost
t_max = 0.9  # never see a fully masked answer, the state every sampler starts from: pass --t_min=0.001 --t_max=1
loss_weighting = "mean"
