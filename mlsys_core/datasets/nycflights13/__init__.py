"""nycflights13, the reference dataset, as a plug-in (published as ``nycflights13`` and
``nycflights13_text`` under the ``mlsys.datasets`` entry-point group)."""

from mlsys_core.datasets.nycflights13.spec import nycflights13_spec, nycflights13_text_spec

__all__ = ["nycflights13_spec", "nycflights13_text_spec"]
