"""The check-data step: leakage between splits (perceptual hashes), data health and drift."""
