"""The promote step: a new model reaches production only if it beats the model there."""
