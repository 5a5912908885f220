"""Evaluation: encode each unique video once, the encoding cache, batched and pairwise scoring, memory budget."""
