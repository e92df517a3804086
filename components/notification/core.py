"""A run's outcome as one message, sent to webhooks and by mail (no kfp, no heavy imports).

One function builds the message (:func:`outcome_message`) and one sends it
(:func:`send_notifications`), for ``tbpipe run`` at its end and for the ``notify`` exit step
on a cluster. Sending never fails or hangs a run: each request is bounded
(:data:`~.config.TIMEOUT_S`, :data:`~.config.TRIES` tries), and a target that cannot be
reached is one warning line naming it without its secret part.

The webhook body is JSON: ``text`` (what Slack shows) plus the structured fields of
:class:`RunOutcome` (``state``, ``run``, ``failed_step``, ``error``, ``test_accuracy``,
``gate``, ``tensorboard_url``). Mail goes through SMTP with the settings of the
environment: ``TBPIPE_SMTP_HOST`` (required for ``mailto:``), ``TBPIPE_SMTP_PORT``
(default 25, or 587 with STARTTLS), ``TBPIPE_SMTP_USER`` and ``TBPIPE_SMTP_PASSWORD``
(log in when set), ``TBPIPE_SMTP_FROM`` (default ``tbpipe@HOST``) and
``TBPIPE_SMTP_STARTTLS`` (``1``/``true``: upgrade the connection before logging in).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping

from tbpipe.components.notification.config import TIMEOUT_S, TRIES, Target

SUCCEEDED, FAILED, CANCELED = "SUCCEEDED", "FAILED", "CANCELED"
#: Environment variables whose values never appear in a message or a warning line (and any
#: variable an ``env:`` target names): a secret's value is masked wherever it shows up.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|WEBHOOK|(^|_)KEY($|_)", re.I)
_MASK = "[secret]"
_MIN_SECRET = 6  # shorter values are too common to mask ("true", a port)


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as the message tells it.

    Attributes:
        state: ``SUCCEEDED``, ``FAILED`` or ``CANCELED`` (KFP's words and spelling; others
            as given).
        run: ``{experiment}/{run}``.
        failed_step: The step that failed (empty: none, or not known).
        error: That step's error line (or the run's).
        test_accuracy: The final model's test accuracy (None: the run has none).
        final_model: ``trained`` or ``finetuned`` (empty: none).
        gate: The promotion gate's decision line (empty: no promotion).
        tensorboard_url: TensorBoard filtered to the run.
        details: Where more is: the run's log file (local), KFP's pipeline job name.

    """

    state: str
    run: str
    failed_step: str = ""
    error: str = ""
    test_accuracy: float | None = None
    final_model: str = ""
    gate: str = ""
    tensorboard_url: str = ""
    details: str = ""


def outcome_from_summary(state: str, run: str, summary: Mapping | None, failed_step: str = "",
                         error: str = "", tensorboard_url: str = "",
                         details: str = "") -> RunOutcome:
    """A RunOutcome from the run's ``_summary.json`` (None: the run wrote none)."""
    summary = summary or {}
    promotion = summary.get("promotion") or {}
    gate = str(promotion.get("line") or promotion.get("decision") or "")
    accuracy = summary.get("test_accuracy")
    return RunOutcome(
        state=state.upper(), run=run, failed_step=failed_step,
        error=(error.strip().splitlines() or [""])[0],
        test_accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        final_model=str(summary.get("final_model") or ""), gate=gate,
        tensorboard_url=str(summary.get("tensorboard_url") or tensorboard_url),
        details=details)


def outcome_message(outcome: RunOutcome) -> dict:
    """The message: ``text`` (a few lines, what a chat shows) and every field of ``outcome``."""
    mark = {SUCCEEDED: "succeeded", FAILED: "FAILED", CANCELED: "was cancelled"}
    lines = [f"tbpipe run {outcome.run} {mark.get(outcome.state, outcome.state)}"]
    if outcome.failed_step:
        lines.append(f"failed step: {outcome.failed_step}")
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    if outcome.test_accuracy is not None:
        which = f" ({outcome.final_model} model)" if outcome.final_model else ""
        lines.append(f"test accuracy: {outcome.test_accuracy:.4f}{which}")
    if outcome.gate:
        lines.append(f"gate: {outcome.gate}")
    if outcome.tensorboard_url:
        lines.append(f"TensorBoard: {outcome.tensorboard_url}")
    if outcome.details:
        lines.append(f"details: {outcome.details}")
    return {"text": "\n".join(lines), **dataclasses.asdict(outcome)}


def secret_values(targets: tuple[Target, ...], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values to mask: secret-looking variables' and those ``env:`` targets name."""
    named = {t.value for t in targets if t.kind == "env"}
    values = {value for name, value in environ.items()
              if (name in named or SECRET_ENV.search(name)) and len(value) >= _MIN_SECRET}
    return tuple(sorted(values, key=len, reverse=True))


def masked(value: object, secrets: tuple[str, ...]) -> object:
    """``value`` (text, or a dict/list of them) with every secret replaced by ``[secret]``."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, _MASK)
        return value
    if isinstance(value, dict):
        return {key: masked(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, secrets) for item in value]
    return value


def send_notifications(targets: tuple[Target, ...], outcome: RunOutcome,
                       environ: Mapping[str, str] | None = None,
                       warn: Callable[[str], None] = print,
                       timeout_s: float | None = None) -> int:
    """Send ``outcome`` to every target; returns how many got it. Never raises.

    A target that fails (no answer within the timeout, an error status, a missing
    ``env:`` variable or SMTP setting) is one ``warn`` line, after :data:`TRIES` tries.
    Each try is cut at ``timeout_s`` (default :data:`TIMEOUT_S`) even if the server drips
    bytes: it runs in a daemon thread that is left behind, so a target costs at most
    ``TRIES x timeout_s`` and a second.
    """
    environ = os.environ if environ is None else environ
    timeout_s = timeout_s or TIMEOUT_S
    secrets = secret_values(targets, environ)
    message = masked(outcome_message(outcome), secrets)
    sent = 0
    for target in targets:
        try:
            kind, value = resolved(target, environ)
            _with_tries(lambda kind=kind, value=value: _bounded(
                lambda: _SENDERS[kind](value, message, environ, timeout_s), timeout_s))
            sent += 1
        except Exception as exc:  # noqa: BLE001 - a message must never fail the run
            cause = masked(str(exc).strip().splitlines()[0] if str(exc).strip()
                           else type(exc).__name__, secrets)
            warn(f"tbpipe: warning: notify {target.shown()}: not sent ({cause}); the run's "
                 "outcome is unchanged")
    return sent


def resolved(target: Target, environ: Mapping[str, str]) -> tuple[str, str]:
    """``(kind, value)`` to send to: an ``env:`` target read from ``environ`` and parsed."""
    if target.kind != "env":
        return target.kind, target.value
    from tbpipe.components.notification.config import parse_target

    text = environ.get(target.value, "").strip()
    if not text:
        raise LookupError(f"${target.value} is not set here (give it with --secret)")
    inner = parse_target(text, f"${target.value}")
    if inner.kind == "env":
        raise LookupError(f"${target.value} names another variable; give the URL or mailto:")
    return inner.kind, inner.value


def _bounded(send: Callable[[], None], timeout_s: float) -> None:
    """Run ``send`` in a daemon thread; TimeoutError if it has not returned in time."""
    import threading

    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            send()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=attempt, name="tbpipe-notify", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)  # the sender's own socket timeouts come first
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if failure:
        raise failure[0]


def _with_tries(send: Callable[[], None]) -> None:
    for attempt in range(TRIES):
        try:
            send()
            return
        except PermanentError:
            raise
        except Exception:
            if attempt + 1 == TRIES:
                raise
            time.sleep(0.5 * (attempt + 1))


class PermanentError(Exception):
    """A refusal that another try would not change (a 4xx answer, a missing setting)."""


def post_webhook(url: str, message: dict, environ: Mapping[str, str],
                 timeout_s: float = TIMEOUT_S) -> None:
    """POST ``message`` as JSON to ``url``; an error status raises (4xx: PermanentError)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            answer.read(65536)
    except urllib.error.HTTPError as exc:
        error = PermanentError if 400 <= exc.code < 500 and exc.code != 429 else OSError
        raise error(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


def send_mail(address: str, message: dict, environ: Mapping[str, str],
              timeout_s: float = TIMEOUT_S) -> None:
    """Mail ``message`` to ``address`` through the SMTP server ``TBPIPE_SMTP_*`` name."""
    import smtplib
    import socket
    from email.message import EmailMessage

    host = environ.get("TBPIPE_SMTP_HOST", "")
    if not host:
        raise PermanentError("set TBPIPE_SMTP_HOST (and TBPIPE_SMTP_PORT, _USER, _PASSWORD, "
                             "_FROM, _STARTTLS as needed) to send mail")
    starttls = environ.get("TBPIPE_SMTP_STARTTLS", "").lower() in ("1", "true", "yes")
    try:
        port = int(environ.get("TBPIPE_SMTP_PORT") or (587 if starttls else 25))
    except ValueError:
        raise PermanentError("TBPIPE_SMTP_PORT must be a port number") from None
    mail = EmailMessage()
    mail["Subject"] = message["text"].splitlines()[0]
    mail["From"] = environ.get("TBPIPE_SMTP_FROM") or f"tbpipe@{socket.getfqdn()}"
    mail["To"] = address
    mail.set_content(message["text"] + "\n")
    with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
        if starttls:
            smtp.starttls()
        if environ.get("TBPIPE_SMTP_USER"):
            smtp.login(environ["TBPIPE_SMTP_USER"], environ.get("TBPIPE_SMTP_PASSWORD", ""))
        smtp.send_message(mail)


_SENDERS = {"webhook": post_webhook, "mailto": send_mail}
