"""Deployment helpers: the team tracking server (``make server``) and a local PostgreSQL."""
