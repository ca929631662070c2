"""The marketplace's side of billing: its rules over :mod:`billing` (see ``service``)."""
