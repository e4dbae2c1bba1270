"""Adapters that let other tools drive an ssmvlm run (lmms-eval: :mod:`ssmvlm.integrations.lmms_eval`)."""
