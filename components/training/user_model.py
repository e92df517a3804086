"""The train step's starting model (``--model``): load it or build it.

A spec is one of:

* ``builtin:cnn``: tbpipe's CNN (:func:`~tbpipe.components.training.model.build_cnn`);
* ``path/to/file.py:function`` or ``package.module:function``: ``function(input_shape,
  num_classes)`` returns a ``keras.Model`` taking float32 images in [0, 1] of shape
  ``(height, width, channels)``; on a cluster a file's source travels as a string
  (``model_source``) and is imported from a temporary module;
* a ``.keras`` file or a tbpipe Model folder (local or gs://): training starts from it.

The spec is parsed once where it enters (:class:`~tbpipe.components.training.config.ModelSpec`,
in the step's config); Keras loads inside functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tbpipe.components.common.errors import InputError
from tbpipe.components.training.config import FORMS, ModelSpec

if TYPE_CHECKING:
    import keras


def load_function(spec: ModelSpec):  # noqa: ANN201 - the user's callable
    """The user's model function.

    From ``spec.source`` (written to a temporary module), the file, or the importable module.
    """
    import importlib
    import importlib.util
    import os
    import sys
    import tempfile

    if spec.kind == "module":
        try:
            module = importlib.import_module(spec.target)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's: one line
            raise InputError(f"--model {spec.text}: cannot import {spec.target} "
                             f"({_first_line(exc)}); install it in the image") from exc
    else:
        name = f"tbpipe_user_model_{hashlib.sha256(spec.text.encode()).hexdigest()[:12]}"
        with tempfile.TemporaryDirectory(prefix="tbpipe-model-src-") as tmp:
            path = spec.target
            if spec.source:
                path = os.path.join(tmp, os.path.basename(spec.target) or "model.py")
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(spec.source)
            elif not os.path.isfile(path):
                raise InputError(f"--model {spec.text}: no such Python file; use {FORMS}")
            try:
                loader = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader)
                sys.modules[name] = module
                loader.loader.exec_module(module)
            except Exception as exc:  # noqa: BLE001 - the user's file: one line
                sys.modules.pop(name, None)
                raise InputError(f"--model {spec.text}: cannot import {spec.target} "
                                 f"({_first_line(exc)}); fix the file") from exc
    function = getattr(module, spec.function, None)
    if not callable(function):
        raise InputError(f"--model {spec.text}: {spec.target} has no function "
                         f"{spec.function!r}; name a function(input_shape, num_classes)")
    return function


def build_start_model(spec: ModelSpec, image_shape, num_classes: int, *, seed: int,
                      learning_rate: float, precision: str,
                      jit_compile: bool | str = "auto",
                      model_kwargs: Mapping[str, object] | None = None) -> keras.Model:
    """The compiled model the train step starts from, computing in ``precision``.

    The built-in CNN; the user's function called under the dtype policy ``precision``
    as ``function(input_shape, num_classes, **model_kwargs)`` (a tuning trial's
    ``model.NAME`` parameters; its last layer then made float32, as the CNN's softmax); or
    a ``.keras`` file / Model
    folder (architecture and weights) set to ``precision``. Checked against the data, then
    compiled at ``learning_rate`` unless the function returned a compiled model that needed
    no change. Raises InputError (one line) before any training.
    """
    from tbpipe.components.common.model_format import check_model_fits, load_fitting_model
    from tbpipe.components.training.model import (
        build_cnn,
        compile_model,
        keras,
        with_precision,
    )

    shape = tuple(int(side) for side in image_shape)
    if spec.kind == "builtin":
        return build_cnn(shape, num_classes, seed, learning_rate, precision=precision,
                         jit_compile=jit_compile)
    hint = "give a model that takes the data's image shape and predicts its classes"
    if spec.kind in ("keras", "folder"):
        model, _ = load_fitting_model(spec.target, shape, num_classes, hint)
        compiled = False
    else:
        function = load_function(spec)
        kwargs = dict(model_kwargs or {})
        keras.utils.set_random_seed(seed)
        before = keras.mixed_precision.global_policy().name
        keras.mixed_precision.set_dtype_policy(precision)
        try:
            model = function(shape, num_classes, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's function: one line naming it
            given = "".join(f", {k}={v!r}" for k, v in kwargs.items())
            raise InputError(f"--model {spec.text}: {spec.function}({shape}, {num_classes}"
                             f"{given}) raised {type(exc).__name__}: {_first_line(exc)}") from exc
        finally:
            keras.mixed_precision.set_dtype_policy(before)
        if not isinstance(model, keras.Model):
            raise InputError(f"--model {spec.text}: {spec.function} returned "
                             f"{type(model).__name__}, not a keras.Model; return the model")
        check_model_fits(spec.text, model, shape, num_classes, hint)
        compiled = bool(getattr(model, "compiled", False))
    precise = with_precision(model, precision)
    if precise is not model or not compiled:
        compile_model(precise, learning_rate, jit_compile=jit_compile)
    return precise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
