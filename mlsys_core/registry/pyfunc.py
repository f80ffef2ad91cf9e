"""Where models logged before the move to ``mlsys_core.training.pyfunc`` find their class.

A models-from-code model runs the ``model_code.py`` copied into its artifacts when it was
logged; those logged before the move import ``DelayModel`` from here. Keep this module while
such versions may still be served.
"""

from mlsys_core.training.pyfunc import DelayModel

__all__ = ["DelayModel"]
