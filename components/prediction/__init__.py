"""Batch prediction: a folder, a list or a URI of images in, top-k predictions out."""
