-- One PostgreSQL server, two databases: the Dagster instance and the MLflow tracking/registry store.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
