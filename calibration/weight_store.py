"""Weights held once in memory while the search tries dozens of variants of one graph.

Every try of the sensitivity search is the same graph with other nodes rewired to float
(`float_fallback.py`). With the weights inside the ONNX model, each try copied the whole model,
serialised it and had ONNX Runtime parse it again: on the base `hoi` (172 MB) about 0.9 s of a
~2.2 s ranking try, for nothing, since no try changes a weight. Here the large initializers leave
the model once (marked as external data, their bytes kept here) and every session of a try gets
them from memory through `SessionOptions.add_external_initializers`; a try's model is the graph's
structure alone (~2.5 MB on base). The model a search keeps is put back together with its weights
(`StoredGraph.materialize`) only when it is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

#: Initializers at least this large leave the model (weights). Smaller ones stay inside: scales and
#: zero points gain nothing by moving, and shape constants must not move (ONNX Runtime's shape
#: inference reads pads and shapes from the model itself and refuses external ones).
EXTERNAL_MIN_BYTES = 16 * 1024
_LOCATION = "location"


class WeightStore:
    """Initializer bytes by key; a model refers to them as external data whose location is the key."""

    def __init__(self, min_bytes: int = EXTERNAL_MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._arrays: dict[str, np.ndarray] = {}
        self._values: dict[str, ort.OrtValue] = {}

    def take_weights(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """Move `model`'s large initializers here, in place: their tensors keep name, type and
        shape, and point at their key. Returns `model`."""
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
                continue
            if len(tensor.raw_data) < self.min_bytes:
                continue
            array = np.array(numpy_helper.to_array(tensor), order="C")  # its own, writable copy
            key = f"h2a-weight-{len(self._arrays)}"
            self._arrays[key] = array
            self._values[key] = ort.OrtValue.ortvalue_from_numpy(array)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            entry = tensor.external_data.add()
            entry.key, entry.value = _LOCATION, key
        return model

    def graph(self, model: onnx.ModelProto) -> StoredGraph:
        """`model` (whose external tensors are this store's) as a try the search can run."""
        external = {
            t.name: _key(t) for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        }
        unknown = sorted(k for k in external.values() if k not in self._arrays)
        if unknown:
            raise ValueError(f"external initializers not in this weight store: {', '.join(unknown[:3])}")
        return StoredGraph(model.SerializeToString(), external, self)

    def with_weights(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of `model` with this store's weights put back inside."""
        whole = onnx.ModelProto()
        whole.CopyFrom(model)
        for tensor in whole.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            tensor.raw_data = self._arrays[_key(tensor)].tobytes()
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
        return whole

    def array(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def value(self, key: str) -> ort.OrtValue:
        return self._values[key]


@dataclass(frozen=True)
class StoredGraph:
    """A graph whose large weights live in a `WeightStore`. `structure`: the serialised model
    without them; `external`: initializer name -> store key."""

    structure: bytes
    external: dict[str, str]
    store: WeightStore

    def add_weights(self, options: ort.SessionOptions) -> None:
        """Hand the weights to a session about to be created from `structure`."""
        names = list(self.external)
        options.add_external_initializers(names, [self.store.value(self.external[n]) for n in names])

    def materialize(self) -> bytes:
        """The whole model, weights inside, as it is written into a bundle."""
        return self.store.with_weights(onnx.load_from_string(self.structure)).SerializeToString()


#: What a search tries and keeps: a whole serialised model, or one whose weights are stored apart.
GraphModel = bytes | StoredGraph


def model_bytes(model: GraphModel) -> bytes:
    return model.materialize() if isinstance(model, StoredGraph) else model


def _key(tensor: onnx.TensorProto) -> str:
    return next(e.value for e in tensor.external_data if e.key == _LOCATION)
