"""Small Functions apps used only by tests/test_functions_host*.py (some deliberately broken)."""
