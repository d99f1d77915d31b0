"""TFLite conversion of plain networks and the checks that the converted model agrees.

Models are converted with a fixed batch size, the one shape that both LiteRT on this
machine and `benchmark_model` on a phone run.
"""

import keras
import tensorflow as tf


def to_tflite(model, batch_size=1):
    """Float32 TFLite flatbuffer (bytes) of a Keras model at a fixed batch size."""
    if model.input_shape[0] != batch_size:
        # Pin the batch dimension: benchmark_model and our timings run one fixed shape.
        inp = keras.Input(batch_shape=(batch_size,) + tuple(model.input_shape[1:]), name="image")
        model = keras.Model(inp, model(inp, training=False), name=model.name)
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def load_interpreter(model_content=None, model_path=None, num_threads=1):
    """LiteRT interpreter (XNNPACK) with tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content, model_path=model_path, num_threads=num_threads)
    interp.allocate_tensors()
    return interp


def run_tflite(interp, x):
    """One inference on a LiteRT interpreter whose input batch matches x."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    return interp.get_tensor(out["index"])
