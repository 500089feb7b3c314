"""INT8 calibration and lower-precision ONNX: point clouds -> Q/DQ INT8 ONNX, FP16 ONNX, accuracy reports,
and what the TensorRT builder is handed (the builder and its implicit INT8 calibrator live in runtimes/).

    feeds.py           clouds -> the graph's inputs, as the manifest's preprocessing says; a rewindable reader
    graph.py           which nodes keep FP32 (found by structure: inputs of ArgMax/TopK, LayerNorm, Softmax)
    qdq.py             quantize_int8: symmetric Q/DQ for TensorRT 8.5-11 (ONNX Runtime, or ModelOpt)
    cache.py           activation ranges keyed by model, data and method
    fp16.py            convert_to_fp16 for strongly typed TensorRT 11
    engine_inputs.py   EngineInputsFromOnnx: the FP16 ONNX, FP32 nodes and calibration feed `build` passes to
                       runtimes.build.onnx2engine
    accuracy.py        FP32 vs FP16 vs INT8 on held-out clouds, and the per-layer sensitivity sweep
    workflow.py        the `calibrate` and `accuracy` commands as API calls
"""
