"""For server_throughput.py --freeze-baseline only: a baseline server's uvicorn worker freezes its start-up objects
once its app is loaded, as the image's app does at the end of `create_app`
(`mlflow_gcp_server.app.freeze_startup_objects`), so that the ratios are those of the login's checks alone."""

import os

if os.environ.get("MLFLOW_GCP_BENCH_FREEZE") == "1":
    try:
        from uvicorn import config
    except ImportError:
        pass
    else:
        _load = config.Config.load

        def _load_then_freeze(self):
            import gc

            _load(self)
            gc.collect()
            gc.freeze()

        config.Config.load = _load_then_freeze
