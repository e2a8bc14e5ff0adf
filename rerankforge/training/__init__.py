"""Training helpers of the train stage: the dev-split evaluator, max-length choice, the model card."""
