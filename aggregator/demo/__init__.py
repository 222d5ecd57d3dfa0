"""``logapm demo``: the project's main job on the embedded default, in one command.

- ``app``: a Django app configured in code (SQLite in a temporary directory, local-memory cache) with
  ``logging_apm`` installed as a project installs it; ``site``: its models, views and URLs;
- ``standin``: a local stand-in for an outside payments API (loopback, free port);
- ``traffic``: the traffic plan and its driver (Django's test client, a thread pool);
- ``clock``: event time for the replay (each request on the clock of its scheduled moment);
- ``console``: steps and a progress bar;
- ``runner``: start to finish: app, traffic, logs, ``logapm run``, alerts, N+1 findings, report.

See ``docs/report.md``.
"""
