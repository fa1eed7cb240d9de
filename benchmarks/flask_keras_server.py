"""The seeds' way to serve the model, for the load test's comparison: Flask's threaded server,
the float Keras model, one call per request (`model.predict`, or `--call` for `model(x)`).

    python benchmarks/flask_keras_server.py --port 8001 [--keras-model artifacts/float_model.h5] [--call]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from runtime import Contract
from train.data import CLASS_NAMES
from train.keras_env import keras


def load_model(path: Path | None):
    if path is not None and path.exists():
        return keras.models.load_model(path), str(path)
    from train.model import build

    # No trained model here (a clean clone before `make demo`): the same architecture with
    # untrained weights does exactly the same work per request.
    return build("edge", (28, 28, 1), len(CLASS_NAMES)), "untrained edge architecture (same compute)"


def create_app(model, direct_call: bool) -> Flask:
    app = Flask(__name__)
    contract = Contract(CLASS_NAMES, *model.input_shape[1:])

    @app.post("/predict")
    def predict():
        image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((contract.width, contract.height))
        x = contract.model_input(np.asarray(image)[None])
        probabilities = model(x, training=False).numpy()[0] if direct_call else model.predict(x, verbose=0)[0]
        index = int(np.argmax(probabilities))
        return jsonify(label=contract.labels[index], confidence=float(probabilities[index]))

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--keras-model", type=Path, default=Path("artifacts/float_model.h5"))
    p.add_argument("--call", action="store_true", help="model(x) instead of model.predict(x)")
    args = p.parse_args(argv)
    model, source = load_model(args.keras_model)
    print(f"Flask + Keras ({'model(x)' if args.call else 'model.predict'}) with {source}", flush=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log: it would only slow Flask down
    create_app(model, args.call).run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
