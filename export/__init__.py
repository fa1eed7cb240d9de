"""Exporters (int8 TFLite, float and int8 ONNX) with embedded metadata, and the parity gate."""
