"""An app whose import fails: the first start of forklift must exit 1 saying why."""

raise RuntimeError("cannot reach the database at startup")
