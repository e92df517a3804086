"""The preprocess step: raw labelled images -> cleaned, scaled, split tbpipe Datasets.

``core.preprocess_data`` is the logic (no kfp); ``component.preprocess`` the KFP wrapper.
"""
