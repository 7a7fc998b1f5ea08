"""Dataset audit: what a model relies on, class by class, from a whole dataset's maps (SpRAy-style).

`kc.audit(maps_or_store, labels=..., masks=...)` returns an `AuditReport` (per-class statistics, clusters of
strategies, findings in words) and writes an HTML report with PNGs (`report.save(out_dir)`);
`keras-cam audit STORE --out report/` does the same from the command line.

The package and the function share the name `audit`: once `keras_cam.audit` is imported, Python binds the
package to `kc.audit`, so the package itself is callable and calls the function (`kc.audit(...)` works in
whichever order things were imported).
"""
import sys
import types

from keras_cam.audit.core import AuditReport, audit

__all__ = ["AuditReport", "audit"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
