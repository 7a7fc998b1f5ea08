"""Dataset audit: what a model relies on, class by class, from a whole dataset's maps (SpRAy-style).

`kc.audit(maps_or_store, labels=..., masks=...)` returns an `AuditReport` (per-class statistics, clusters of
strategies, findings in words) and writes an HTML report with PNGs (`report.save(out_dir)`);
`keras-cam audit STORE --out report/` does the same from the command line.

The package is `auditing`, so that `kc.audit` is always the function (a package named `audit` would be bound
to `kc.audit` once imported).
"""
from keras_cam.auditing.core import AuditReport, audit

__all__ = ["AuditReport", "audit"]
