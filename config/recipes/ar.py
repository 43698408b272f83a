# The autoregressive baseline: the same model made causal, next-token loss on the packed stream.
# It is the judge (generative perplexity) and the speed baseline of the study.
recipe = "ar"
