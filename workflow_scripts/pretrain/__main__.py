"""``python -m workflow_scripts.pretrain``: the pre-training stage (see train.py)."""

from workflow_scripts.pretrain.train import main

if __name__ == "__main__":
    raise SystemExit(main())
