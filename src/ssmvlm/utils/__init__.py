"""Small shared utilities: errors, atomic I/O, provenance, seeding, progress."""
