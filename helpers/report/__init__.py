"""Stage 4, the report tells: the verdict in words, figures, rendered HTML, provenance."""
