"""Window quality: parse landed stream files into rows + rejects (`readers`), gate rows with
Great Expectations into curated + quarantine (`suite`). Never imports dagster or mlflow."""
