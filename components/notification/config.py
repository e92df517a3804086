"""Where a run's outcome is sent: ``--notify`` targets, parsed and checked once (no kfp).

A target is a webhook (``https://...`` or ``http://...``: a Slack-compatible endpoint, or
any that takes JSON), ``mailto:ADDR`` (SMTP settings from ``TBPIPE_SMTP_*``, see
:mod:`.core`) or ``env:VAR``: the webhook URL or ``mailto:`` address is the value of the
environment variable ``VAR`` where the message is sent (a Kubernetes Secret's key, through
``--secret``), so the URL itself is never a pipeline parameter, a log line or an artifact.
``--notify`` may be given more than once; the targets travel as one text, separated by
spaces (``notify`` in ``--params-file``: the same text).
"""

from __future__ import annotations

import dataclasses
import re

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.params import Param, ParamGroup

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: Seconds one webhook request or SMTP conversation may take, and the tries per target:
#: a dead endpoint costs a run at most TIMEOUT_S x TRIES per target.
TIMEOUT_S = 5.0
TRIES = 2


@dataclasses.dataclass(frozen=True)
class Target:
    """One place a message goes: ``kind`` is ``webhook``, ``mailto`` or ``env``."""

    kind: str
    value: str

    def shown(self) -> str:
        """How a log line names it without its secret part (a webhook's path is its key)."""
        if self.kind == "webhook":
            scheme, _, rest = self.value.partition("://")
            return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}/..."
        return f"{self.kind}:{self.value}"


def parse_target(text: str, name: str = "notify") -> Target:
    """One target from its text; SettingError (one line naming ``name``) if it is none."""
    lower = text.lower()
    if lower.startswith(("http://", "https://")):
        if not text.partition("://")[2].split("/", 1)[0]:
            raise SettingError(name, Target("webhook", text).shown(), "a webhook URL needs a host")
        return Target("webhook", text)
    if lower.startswith("mailto:"):
        address = text[len("mailto:"):]
        if not _ADDRESS.match(address):
            raise SettingError(name, text, "mailto: needs an address like mailto:team@example.com")
        return Target("mailto", address)
    if lower.startswith("env:"):
        var = text[len("env:"):]
        if not _ENV_VAR.match(var):
            raise SettingError(name, text, "env: needs an environment variable name, like "
                                           "env:TBPIPE_WEBHOOK_URL")
        return Target("env", var)
    raise SettingError(name, text.split("://")[0] + ("://..." if "://" in text else ""),
                       "use an http(s):// webhook URL, mailto:ADDRESS or env:VARIABLE")


@dataclasses.dataclass(frozen=True)
class NotifyConfig:
    """The notify step's settings.

    Attributes:
        notify: The targets, separated by spaces (empty: no message).

    """

    notify: str = ""

    def __post_init__(self) -> None:
        """Check every target once."""
        self.targets  # noqa: B018 - parses, raising SettingError for a bad one

    @property
    def targets(self) -> tuple[Target, ...]:
        """The parsed targets, in the order given, without repeats."""
        return tuple(dict.fromkeys(parse_target(part) for part in self.notify.split()))


PARAMS = ParamGroup("notify", (
    Param("notify", "where the run's outcome is sent, on success and on failure: an "
                    "http(s):// webhook (Slack-compatible, or any taking JSON), mailto:ADDRESS "
                    "(SMTP from $TBPIPE_SMTP_*) or env:VAR (the URL or address is that "
                    "variable's value, e.g. from --secret); repeatable (default: none)",
          field="notify", repeatable=True),
), config=NotifyConfig)
