"""Writers for each first-boot format; `harness.seed` is the entry point and
documents the intent vocabulary they share."""
