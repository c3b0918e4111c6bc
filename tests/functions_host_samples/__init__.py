"""Small Functions apps used only by tests/devhost/test_functions_host*.py (some deliberately broken)."""
