"""Reading stores back as tables: `query` (select, average, export, several stores side by
side) and `summary` (counts, accuracies, fall-backs, per kind)."""
