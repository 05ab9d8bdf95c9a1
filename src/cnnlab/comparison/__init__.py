"""Side by side: architectures measured and trained alike (``cnnlab compare``), and experiments that
train several runs and compare them (beside evaluation; uses training)."""
