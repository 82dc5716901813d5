"""Reproducible experiments behind the ``acdc`` CLI; shared helpers live in :mod:`.common`."""
