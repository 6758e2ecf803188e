import os, sys
import onnxruntime as ort
if os.environ.get("SPIN") == "1":
    _orig = ort.SessionOptions
    class Opts(_orig):
        def add_session_config_entry(self, key, value):
            if key == "session.intra_op.allow_spinning":
                value = "1"
            return super().add_session_config_entry(key, value)
    ort.SessionOptions = Opts
from anomaly_inspect.cli import main
sys.exit(main())
