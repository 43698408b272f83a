"""nanodllm: a small, readable masked-diffusion language model codebase."""
