"""Child process for the restart tests: one alerting stage, killed (``os._exit``, no cleanup, no commit)
at a chosen point. Usage: alert_killed_run.py POINT STATE CONFIG ENV_JSON NOW

POINT: ``evaluation`` (inside the evaluation transaction, before its commit), ``before-send`` (after the
commit, before any notifier is called), ``during-send`` (a notifier accepted a message, its "sent" not
yet recorded), ``none`` (a normal run).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from aggregator.config import load_config
from aggregator.model import RunContext
from aggregator.store import Store


def main() -> None:
    point, state, config_path, env_json, now = sys.argv[1:6]
    import alerting.stage as stage
    from alerting.state import AlertStore

    def die(*_: Any, **__: Any) -> None:
        os._exit(137)

    if point == "evaluation":
        original = AlertStore.set_last_eval

        def set_then_die(self: AlertStore, rule: str, at: int) -> None:
            original(self, rule, at)
            die()

        AlertStore.set_last_eval = set_then_die  # type: ignore[method-assign]
    elif point == "before-send":
        stage.send_due = die  # type: ignore[assignment]
    elif point == "during-send":
        AlertStore.mark_sent = die  # type: ignore[assignment]
    config = load_config(config_path, environ=json.loads(env_json))
    store = Store(state)
    result = stage.evaluate(RunContext(store=store, config=config, now=float(now)))
    store.close()
    print(json.dumps({"ok": result.ok, "lines": result.lines}))


if __name__ == "__main__":
    main()
