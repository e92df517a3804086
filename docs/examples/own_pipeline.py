"""A pipeline of your own with tbpipe's steps in it (docs/own-pipeline.md walks through it).

Compile it for a cluster::

    python docs/examples/own_pipeline.py own_pipeline.yaml

or run it locally through kfp.local (what tests/integration/test_own_pipeline.py does)::

    from kfp import local
    local.init(runner=local.SubprocessRunner(use_venv=False))
    own_pipeline(log_root="/tmp/tb", epochs=1)
"""

import sys

from kfp import compiler, dsl

from tbpipe.components import evaluate, preprocess, train
from tbpipe.pipelines import Resources, place_task


@dsl.component(base_image="python:3.11-slim")
def gate(accuracy: float, threshold: float) -> str:
    """Your own step: decide what happens to the model (here: a verdict string)."""
    verdict = "ship" if accuracy >= threshold else "hold"
    print(f"accuracy {accuracy:.4f} -> {verdict}")
    return verdict


@dsl.pipeline(name="my-training")
def own_pipeline(log_root: str, data: str = "builtin:digits", epochs: int = 3,
                 threshold: float = 0.9) -> str:
    """Preprocess -> train (on a GPU node) -> evaluate -> your gate."""
    prep = preprocess(data=data, log_root=log_root)
    trained = train(train_data=prep.outputs["train_data"], val_data=prep.outputs["val_data"],
                    log_root=log_root, epochs=epochs)
    place_task(trained, gpu_count=1, gpu_type="nvidia-l4",
               resources=Resources("2", "4", "8Gi", "12Gi"))
    scored = evaluate(model=trained.outputs["model"], test_data=prep.outputs["test_data"],
                      log_root=log_root)
    return gate(accuracy=scored.outputs["accuracy"], threshold=threshold).output


if __name__ == "__main__":
    compiler.Compiler().compile(own_pipeline, sys.argv[1] if len(sys.argv) > 1 else
                                "own_pipeline.yaml")
