"""The management REST API and the declarative configuration document."""
