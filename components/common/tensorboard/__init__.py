"""TensorBoard logging in tensorboardX's layers.

- :mod:`.writer`: ``open_writer`` and what steps log through it (hparams, images, sync);
- :mod:`.fastpath`: the writer thread's queue and deferred events, the one module that
  touches tensorboardX internals (version-checked, with a public fallback);
- :mod:`.encode`: scalar events in the protobuf wire format;
- :mod:`.segments` and :mod:`.sink`: live event files on a store, published as segments.

The Keras callback, used by training and fine-tuning only, lives with the train step
(:mod:`tbpipe.components.training.tensorboard_callback`).
"""
