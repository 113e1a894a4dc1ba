"""Image input for vision-language models: loading a user's image and preprocessing it as transformers does."""
