"""sed training: data, model, training loop, evaluation and ONNX export (needs torch)."""
