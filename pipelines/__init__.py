"""tbpipe's pipelines, and the pieces to put its steps in your own.

    from tbpipe.pipelines import build_training_pipeline, compile_pipeline, place_task

``build_training_pipeline(options, sweep=None)`` returns tbpipe's ``@dsl.pipeline`` function
(:mod:`tbpipe.pipelines.training`; a :class:`Sweep` trains a ParallelFor of trials);
``place_task`` puts GPUs, node selectors, the GPU toleration and CPU/memory on any task
(:mod:`tbpipe.pipelines.placement`). The ``tbpipe`` command lives in
:mod:`tbpipe.pipelines.cli`, the runners and clients in :mod:`tbpipe.pipelines.runners`.
"""

from tbpipe.pipelines.placement import CompileOptions, Resources, place_task
from tbpipe.pipelines.sweep import Sweep
from tbpipe.pipelines.training import PipelineParams, build_training_pipeline, compile_pipeline

__all__ = ["CompileOptions", "PipelineParams", "Resources", "Sweep", "build_training_pipeline",
           "compile_pipeline", "place_task"]
