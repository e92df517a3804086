"""User-facing errors: each becomes one clear line and a non-zero exit."""


class TbpipeError(Exception):
    """An error the user can act on; its message names the input and what to do."""


class InputError(TbpipeError):
    """Bad data or bad parameters given to a step."""


class SettingError(InputError):
    """A setting outside what it may be: names the setting, its value and the rule.

    The line reads ``epochs=0: must be a positive integer``; the CLI names its flag instead
    (``--finetune-epochs=0: ...``), from the same three parts.
    """

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}={value!r}: {rule}")


class StorageError(TbpipeError):
    """A storage location that cannot be read or written."""


class StorageUnavailable(StorageError):  # noqa: N818 - reads as a state, like the GCS error
    """Storage could not be reached in time (transient errors outlasted the retry deadline)."""


class exit_on_error:  # noqa: N801 - used as a context manager, reads like a statement
    """In a step's wrapper: turn a TbpipeError into one stderr line and exit status 1.

    Without it the KFP executor prints a traceback; users need the one line that names the
    input and what to do.
    """

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        if exc is not None and isinstance(exc, TbpipeError):
            import sys

            print(f"tbpipe: {self.step}: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        return False
