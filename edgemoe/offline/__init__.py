"""Offline jobs on a converted model: routing profiles, per-expert bit widths, perplexity."""
