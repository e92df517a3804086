"""User-facing errors: each becomes one clear line and a non-zero exit."""


class TbpipeError(Exception):
    """An error the user can act on; its message names the input and what to do."""


class InputError(TbpipeError):
    """Bad data or bad parameters given to a step."""


class StorageError(TbpipeError):
    """A storage location that cannot be read or written."""
