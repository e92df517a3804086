"""Where pipelines run: kfp.local (subprocess, docker), a KFP cluster, images, TensorBoard."""
