"""The LLM Cluster-agent diversity score: stages in :mod:`.agent`, the score from raw records in :mod:`.score`."""
