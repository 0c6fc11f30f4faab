"""Small WSGI apps the integration tests run under real servers (gunicorn), not test modules."""
