"""The ``tbpipe`` command: one module per sub-command, :mod:`.main` ties them together."""
