"""Keras (and TensorFlow) imported about a second faster: without scikit-learn."""

from __future__ import annotations

import sys
from types import ModuleType


def import_keras() -> ModuleType:
    """Import Keras with scikit-learn hidden, and return it.

    At start-up Keras imports scikit-learn (and SciPy) for its optional ``keras.wrappers``,
    which tbpipe never uses: about 1 s of every TensorFlow step (docs/performance.md).
    scikit-learn itself stays importable afterwards. Call this before anything else imports
    Keras or TensorFlow.
    """
    if "keras" not in sys.modules and "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # type: ignore[assignment] - `import sklearn` fails
        try:
            import keras
        finally:
            del sys.modules["sklearn"]
    import keras

    return keras
