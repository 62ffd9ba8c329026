"""Stage 1, a scan becomes voxels: gradient tables, loading and layouts, tissue, noise, the
fit/judge split, the :class:`~helpers.scan.subject.Subject`, the example scans."""
