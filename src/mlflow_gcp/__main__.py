from mlflow_gcp.cli import main

main()
