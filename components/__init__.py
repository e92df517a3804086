"""tbpipe's KFP components, to use in tbpipe's pipeline or your own.

    from tbpipe.components import preprocess, train, evaluate, finetune

Each needs only its inputs and ``log_root``; the experiment defaults to ``default`` and the
run to the KFP job's name, so every step of one pipeline run logs side by side under
``{log_root}/{experiment}/{run}/{step}``. ``decide_finetune`` and ``select_model`` route
tbpipe's own DAG. The step logic (no kfp) lives beside each wrapper, in ``core.py``.
"""

from tbpipe.components.evaluation.component import evaluate
from tbpipe.components.finetuning.component import finetune
from tbpipe.components.preprocessing.component import preprocess
from tbpipe.components.selection.component import decide_finetune, select_model
from tbpipe.components.training.component import train

__all__ = ["decide_finetune", "evaluate", "finetune", "preprocess", "select_model", "train"]
