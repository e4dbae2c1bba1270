"""Backbone family module (being written)."""
