"""ssmvlm.study: a study spec → its run matrix → every run, resumable → analysis → report.

``load_spec`` / ``validate_spec`` (``spec``), ``expand_matrix`` (``matrix``), ``run_study`` /
``rebuild_report`` (``runner``), the pure analysis functions (``analysis``, ``stats``, ``findings``) and
``write_report`` (``report``). The CLI is ``ssmvlm study``.
"""
