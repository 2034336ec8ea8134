"""A minimal Django project that answers ``POST /predict`` with a modelport model."""
