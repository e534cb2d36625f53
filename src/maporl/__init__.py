"""maporl: multi-agent post-co-training of language models with reinforcement learning (MAPoRL)."""

__version__ = "0.1.0"
