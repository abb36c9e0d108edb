"""Reports: MLflow runs -> tables (mean +- std, significance) and figures. Never imports torch."""
