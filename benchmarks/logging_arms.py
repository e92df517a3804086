"""Benchmark 2, part 2: the callback arms timed on one bare ``model.fit`` loop.

Each arm makes its callbacks and a closer that returns its writer thread's CPU seconds (or
None): no callback, a no-op per-batch callback, tbpipe's ``TensorBoardX`` as in the train
step, tbpipe's callback as it was before (``add_scalar`` per metric through tensorboardX's
multiprocessing queue) and Keras' own TensorBoard callback.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from benchmarks.common import median

NONE = "no logging"
TBPIPE = "tbpipe TensorBoardX, as in the train step"
BEFORE = "tbpipe before: add_scalar per metric, mp queue"
KERAS = "keras.callbacks.TensorBoard(update_freq='batch', histogram_freq=1)"
TBPIPE_GPU = "tbpipe TensorBoardX"


def timed(callback_class: type) -> type:
    """A subclass of a Keras callback class that adds up the seconds spent in its hooks.

    Wall seconds (``batch_seconds``, ``epoch_seconds``) and the CPU seconds of the thread each
    hook ran on (``cpu_seconds``: batch hooks may run on Keras' callback threads).
    """

    class Timed(callback_class):
        batch_seconds = epoch_seconds = cpu_seconds = 0.0
        batches = 0

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            super().on_train_batch_end(batch, logs)
            self.batch_seconds += time.perf_counter() - started
            self.cpu_seconds += time.thread_time() - cpu  # += is not atomic: may miss a few
            self.batches += 1

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            super().on_epoch_end(epoch, logs)
            self.epoch_seconds += time.perf_counter() - started
            self.cpu_seconds += time.thread_time() - cpu

        @property
        def hook_seconds(self) -> float:
            return self.batch_seconds + self.epoch_seconds

    Timed.__name__ = f"Timed{callback_class.__name__}"
    return Timed


@contextlib.contextmanager
def protobuf_events() -> Iterator[None]:
    """Within: the writer thread builds scalar events as protobuf objects, as it did before
    ``tensorboard.encode`` (an arm measuring what the direct encoding saves)."""
    from tbpipe.components.common.tensorboard import fastpath

    def event(self):  # noqa: ANN001, ANN202 - a fastpath._Scalars; returns an Event proto
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        return Event(wall_time=self.wall_time, step=self.step, summary=Summary(value=[
            Summary.Value(tag=tag, simple_value=value) for tag, value in self.values]))

    encoded = fastpath._Scalars.event
    fastpath._Scalars.event = event
    try:
        yield
    finally:
        fastpath._Scalars.event = encoded


def writer_thread_cpu(writer) -> object:  # noqa: ANN001 - a tensorboardX SummaryWriter
    """A function returning the CPU seconds the writer's thread has used so far.

    Call it after ``sync_events`` (or a flush) and before ``close`` (the thread ends there).
    """
    from tbpipe.components.common.tensorboard.fastpath import writer_thread

    worker = writer_thread(writer)
    clock = time.pthread_getcpuclockid(worker.ident)
    return lambda: time.clock_gettime(clock)


def legacy_callback_class() -> type:
    """tbpipe's callback as it was: one ``add_scalar`` per metric and per batch."""
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    class LegacyTensorBoardX(TensorBoardX):
        async_safe = False

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            self._step += 1
            if not self.batch_every or batch % self.batch_every or not logs:
                return
            for name, value in logs.items():
                self.writer.add_scalar(f"batch/{name}", float(value), self._step)

    return LegacyTensorBoardX


def callback_arms(root: str):  # noqa: ANN201 - name -> (make callbacks, close) factories
    """The arms of part 2: each returns its callbacks and a closer."""
    import keras
    from tensorboardX import SummaryWriter

    from tbpipe.components.common.tensorboard.writer import open_writer, sync_events
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    class NoOp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs=None) -> None:
            pass

    def closer(writer, close):  # noqa: ANN001, ANN202 - returns the writer thread's CPU s
        thread_cpu = writer_thread_cpu(writer)

        def finish() -> float:
            writer.flush()
            sync_events(writer)
            seconds = thread_cpu()
            close()
            return seconds
        return finish

    def tbpipe(run: str):  # noqa: ANN202
        context = open_writer(os.path.join(root, run))
        writer = context.__enter__()
        return ([timed(TensorBoardX)(writer, 1, 1)],
                closer(writer, lambda: context.__exit__(None, None, None)))

    def legacy(run: str):  # noqa: ANN202
        writer = SummaryWriter(logdir=os.path.join(root, run), flush_secs=5)
        return [timed(legacy_callback_class())(writer, 1, 1)], closer(writer, writer.close)

    def keras_tb(run: str):  # noqa: ANN202
        callback = timed(keras.callbacks.TensorBoard)(
            log_dir=os.path.join(root, run), update_freq="batch", histogram_freq=1)
        return [callback], lambda: None

    return {NONE: lambda run: ([], lambda: None),
            "a no-op per-batch callback (Keras calls hooks on the loop)":
                lambda run: ([NoOp()], lambda: None),
            TBPIPE: tbpipe,
            BEFORE: legacy,
            KERAS: keras_tb}


def gpu_logging_arms(fit, root: str, steps: int, work: dict) -> dict:  # noqa: ANN001
    """bench_gpu's logging arms: no callback, a no-op one, tbpipe's callback variants.

    Args:
        fit: Fits the model with the callbacks given; returns (epoch clock, seconds).
        root: Where the arms' runs write their event files.
        steps: Batches per epoch.
        work: Filled with each tbpipe arm's logging CPU seconds per epoch (hooks on any
            thread plus the writer thread) over a steady epoch's wall time.
    """
    import keras

    from tbpipe.components.common.tensorboard.writer import open_writer, sync_events
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    class NoOp(keras.callbacks.Callback):
        async_safe = True

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            pass

    def tbpipe(name: str, every: int = 1, histograms: int = 1, async_safe: bool = True,
               protobuf: bool = False) -> tuple:
        def arm() -> tuple[object, float]:
            run = os.path.join(root, f"run-{time.monotonic_ns()}")
            with open_writer(run) as writer, (
                    protobuf_events() if protobuf else contextlib.nullcontext()):
                callback = timed(TensorBoardX)(writer, every, histograms, steps_per_epoch=steps)
                callback.async_safe = async_safe
                thread_cpu = writer_thread_cpu(writer)
                clock, seconds = fit((callback,))
                sync_events(writer)
                per_epoch = (callback.cpu_seconds + thread_cpu()) / len(clock.wall)
            work.setdefault(name, []).append(per_epoch / median(clock.wall[1:]))
            return clock, seconds
        return name, arm

    return dict([(NONE, fit), ("a no-op async_safe batch callback", lambda: fit((NoOp(),))),
                 tbpipe(TBPIPE_GPU), tbpipe(f"{TBPIPE_GPU}, every 10 batches", every=10),
                 tbpipe(f"{TBPIPE_GPU}, no histograms", histograms=0),
                 tbpipe(f"{TBPIPE_GPU}, protobuf-built events (before)", protobuf=True),
                 tbpipe(f"{TBPIPE_GPU}, async_safe off", async_safe=False)])
