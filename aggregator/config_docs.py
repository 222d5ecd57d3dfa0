"""Render ``docs/configuration.md`` from ``aggregator.config.SETTINGS`` (a test keeps the file in step).

    python -m aggregator.config_docs > docs/configuration.md
"""

from __future__ import annotations

import sys

from aggregator.config import SETTINGS


def _default(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(none)" if not value else ", ".join(map(str, value))
    if value == "":
        return "(empty)"
    return str(value)


def render() -> str:
    lines = [
        "# Configuration reference (aggregator)",
        "",
        "Every setting of `logapm run` and its stages. Sources, strongest first: command-line options, the",
        "environment variable, the TOML config file (`--config FILE` or `LOGAPM_CONFIG`), the default.",
        "In the TOML file a setting `a.b.c` is key `c` of table `[a.b]`. Secrets are never printed, logged",
        "or stored.",
        "",
        "This page is generated: `python -m aggregator.config_docs > docs/configuration.md`.",
        "",
    ]
    section = None
    for s in SETTINGS:
        top = s.path.split(".")[0]
        if top != section:
            section = top
            lines += [f"## [{top}]", "", "| setting | environment variable | default | meaning |", "|---|---|---|---|"]
        env = f"`{s.env}`" if s.env else ""
        doc = (s.doc + (" Secret." if s.secret else "")).replace("|", r"\|")
        lines.append(f"| `{s.path}` | {env} | {_default(s.default)} | {doc} |")
        nxt = SETTINGS.index(s) + 1
        if nxt == len(SETTINGS) or SETTINGS[nxt].path.split(".")[0] != top:
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
