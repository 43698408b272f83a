# LLaDA SFT: one sample per row, [prompt, response, EOS, EOS, ...]; the pads are targets too.
# For the DiffuGPT project's variant add --pad_token=pad --pad_masked_perc=0.1 --pad_anneal_steps=500.
recipe = "eos_pad"
pad_token = "eos"
t_min = 0.1
t_max = 0.9
loss_weighting = "mean"
