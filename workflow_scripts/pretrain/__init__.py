"""Pre-training with megatron-core (stage ``pretrain``) and conversion to Hugging Face (stage ``convert``).

(The named architectures and the ``pretrain:`` section live in :mod:`workflow_scripts.config`.)
- ``train`` (``python -m workflow_scripts.pretrain``): the training stage;
- ``convert`` (``python -m workflow_scripts.pretrain.convert``): checkpoint -> LlamaForCausalLM folder;
- ``cpu``: the few adjustments megatron-core needs to run on a CPU, kept apart from the rest;
- ``synthetic``: a synthetic mix artifact (benchmarks, GPU checks, tests).

Nothing is imported here, so ``python -m workflow_scripts.pretrain.<module>`` runs each module cleanly.
"""
