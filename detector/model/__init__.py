"""The model: its ONNX contract, the batched scorer, where a model is found and the
YAMNet baseline (scored through the same interface)."""
