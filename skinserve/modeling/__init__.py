"""The torch side: the multi-task model, checkpoints, datasets, targets, metrics, evaluation and explanations."""
