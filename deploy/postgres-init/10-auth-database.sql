-- The basic-auth app keeps users and permissions in a database of its own (see deploy/server.py).
CREATE DATABASE mlflow_auth;
