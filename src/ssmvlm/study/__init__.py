"""ssmvlm.study: a study spec → its run matrix → every run, resumable → analysis → report.

``load_spec`` / ``validate_spec`` (``spec``); planning the main and ablation cells, each with its typed config
(``matrix``); executing one cell and reading its result (``cells``, through the stage adapters in ``stages``);
where cells run (``launchers``); scheduling and the whole study, ``run_study`` / ``rebuild_report`` (``runner``);
the results table (``results``); the pure analysis functions (``analysis``, ``stats``, ``findings``) and
``write_report`` (``report``). The CLI is ``ssmvlm study``.
"""
