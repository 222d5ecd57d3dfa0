"""Notifiers: email (SMTP) and Slack (incoming webhook), switched by ``PERFORMANCE_ALERT_*_ENABLED``."""

from __future__ import annotations

from typing import Any

from alerting.notify.base import AlertMessage, Notifier, NotifyError

__all__ = ["AlertMessage", "Notifier", "NotifyError", "build_notifiers", "enabled_names"]


def enabled_names(config: Any) -> list[str]:
    return [n for n in ("email", "slack") if config.get(f"alerting.{n}.enabled")]


def build_notifiers(config: Any) -> tuple[list[Notifier], list[str]]:
    """The enabled notifiers, and the configuration problems of those that cannot be built."""
    notifiers: list[Notifier] = []
    problems: list[str] = []
    if config.get("alerting.email.enabled"):
        from alerting.notify.email import EmailNotifier

        try:
            notifiers.append(EmailNotifier.from_config(config))
        except ValueError as exc:
            problems.append(f"email: {exc}")
    if config.get("alerting.slack.enabled"):
        from alerting.notify.slack import SlackNotifier

        try:
            notifiers.append(SlackNotifier.from_config(config))
        except ValueError as exc:
            problems.append(f"slack: {exc}")
    return notifiers, problems
