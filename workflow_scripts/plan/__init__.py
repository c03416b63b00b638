"""The plan command: what a configuration will ask of LLMs, GPUs and disks, before anything runs.

``requests`` counts the LLM requests (generation, Cluster-agent judge, topic extraction), the ones the request
cache already answers and the ones experiments share, with their prompt and completion tokens; ``compute``
turns the grid into GPU-hours, disk and dollars; ``__main__`` prints it all as a table or JSON.
"""
