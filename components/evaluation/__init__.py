"""The evaluate step: metrics, TensorBoard summaries and a Markdown report for a model."""
