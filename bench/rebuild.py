"""Rebuild a trained model from its Keras file, from Keras's own layers only, and count what it holds.

The training stage leaves `model.keras` (architecture config and weights, `model.save`). When every
object its config names is one of Keras's built-in layers in REBUILT_LAYERS (or a model, dtype policy,
initializer, regularizer or constraint of Keras's own), this module loads it with Keras's loader in
safe mode, without the entry's code, and the audit scores exactly that model, called with
`training=False` by Keras's own `predict`. A model built from these layers has nowhere to hide a number:

- `total_params` are the rebuilt model's weights, each element once whatever its dtype (a float64
  weight is one parameter; storage bits, from `weight_tensors`, say what it costs), shared weights once;
- numbers in the config that act at inference count as parameters too (`config_numbers`), by the graph
  path's rule: of numeric hyperparameters outside STRUCTURAL_KEYS that differ from the layer's default,
  arrays stored in the config and constants passed to a layer's call in the functional graph, every
  element of a list counts (a per-channel scale is one parameter per channel) and scalars (a
  `Rescaling(1 / 255)`, a LeakyReLU's slope) are free up to 64 distinct values. Layers that are the identity at inference
  (TRAINING_ONLY_LAYERS: dropout, noise, augmentation) and training-time settings (initializers,
  regularizers, constraints, momentum, seeds) count nothing;
- the wiring is counted too: shaping integers (crops, paddings, target shapes) join the small numbers, and the
  tensors the layer calls take past FREE_EDGES count one each (a weight can be a repeat count);
- a config key Keras's own `get_config()` does not write refuses the model (it was not written by Keras).

Anything else (a subclassed model or layer, a Lambda, a keras.ops call in a functional graph) is
"custom code": `custom_code` names it and the audit takes the graph path (bench.graph_audit).
"""

from __future__ import annotations

import inspect
import json
import re
import zipfile
from pathlib import Path

KERAS_FILE = "model.keras"
# A .keras file is a zip: its config is a few kB, its weights 4-8 bytes per parameter. Anything far larger is
# not a model within any budget (a zip bomb would otherwise fill the audit's memory).
MAX_CONFIG_BYTES = 16 * 2**20
MAX_WEIGHTS_BYTES = 1024 * 2**20

# Keras's layers the harness rebuilds: what a collection of course notebooks and Keras's examples uses.
REBUILT_LAYERS = frozenset({
    "InputLayer", "Dense", "EinsumDense", "Activation", "Identity",
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Rescaling", "Resizing", "CenterCrop",
    "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization",
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness",
})
# Identity at inference (`training=False`): their numbers never reach a prediction.
TRAINING_ONLY_LAYERS = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization",
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness",
})
MODELS = frozenset({"Functional", "Sequential", "Model"})
# Layers the rebuilt ones make for themselves (an LSTM's cell), never named in a config.
INNER_LAYERS = frozenset({"SimpleRNNCell", "LSTMCell", "GRUCell"})
# Other Keras objects a config may hold, by the module Keras writes for them.
KERAS_OBJECT_MODULES = ("keras.initializers", "keras.regularizers", "keras.constraints", "keras.dtype_policies", "keras.quantizers")
KERAS_OBJECT_CLASSES = frozenset({"DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "Int4DTypePolicy", "QuantizedFloat8DTypePolicy",
                                  "DTypePolicyMap"})
# Quantized storage the audit counts weight by weight: an int8 element is one weight, an int4 kernel's int8 element
# two (int4_packed). Others (GPTQ's, say) pack weights in their own layouts, which a count of elements would miss.
COUNTED_QUANTIZATION_MODES = frozenset({"int8", "int4", "float8"})
# Markers Keras's serialization writes for values: a graph tensor, a tuple, an array.
TENSOR, TUPLE, ARRAY_MARKERS = "__keras_tensor__", "__tuple__", ("__numpy__", "__tensor__")
# Layer hyperparameters that set shapes and wiring (integers the data flow checks), or act in training only.
STRUCTURAL_KEYS = frozenset({
    "name", "trainable", "dtype", "units", "filters", "kernel_size", "strides", "dilation_rate", "groups",
    "depth_multiplier", "pool_size", "padding", "cropping", "size", "target_shape", "dims", "n", "axis", "axes",
    "height", "width", "output_shape", "batch_shape", "batch_size", "shape", "sparse", "ragged", "optional",
    "seed", "momentum", "rate", "noise_shape", "stddev", "factor", "height_factor", "width_factor", "value_range",
    "num_heads", "key_dim", "value_dim", "return_sequences", "return_state", "go_backwards",
    "stateful", "unroll", "dropout", "recurrent_dropout", "implementation", "reset_after", "time_major",
    "merge_mode", "l1", "l2",
})
# Not `fill_value`: the augmentation layers' is training-only (TRAINING_ONLY_LAYERS count nothing anyway), but
# Resizing's pads the image at inference (pad_to_aspect_ratio=True): a red team spelt out a whole trained
# classifier, one number per Resizing layer, in fill_values that counted nothing.
TRAINING_ONLY_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Structural settings whose integers still pick which values flow where (a crop's offsets select pixels): they
# join the small numbers, free up to 64 distinct values in all.
# Resizing's and CenterCrop's height and width choose pixels (and bilinear weights) as a crop's offsets do.
# Pooling's and convolutions' pool sizes, strides and dilations (and the groups of a GroupNormalization or a grouped
# convolution) too: a red team hid 100 trained numbers, none counted, as the pool sizes of 100 AveragePooling1D
# layers, each the mean of one pixel and zeros (pixel / pool_size); the graph path counts them as op attributes.
SHAPING_KEYS = frozenset({"cropping", "padding", "target_shape", "dims", "size", "n", "axis", "axes", "height", "width",
                          "pool_size", "strides", "dilation_rate", "groups"})
# Edges of the functional graph (tensors taken by layer calls) free in all: a weight can be wired in as the number
# of times one tensor feeds a Concatenate or an Add. The committed board's models take a few dozen.
FREE_EDGES = 256
# How the model was compiled (optimizer, loss, metrics): the audit loads without compiling and never reads it.
COMPILE_CONFIG = "compile_config"


class NotRebuildable(Exception):
    """The Keras file cannot be rebuilt from Keras's own layers; the message says why (a class name, a key)."""


def read_config(keras_file: str | Path) -> dict:
    """The parsed `config.json` of a `.keras` file.

    Raises NotRebuildable when the file is missing, not a zip, or holds more than MAX_*_BYTES."""
    try:
        with zipfile.ZipFile(keras_file) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            if sizes.get("config.json", MAX_CONFIG_BYTES + 1) > MAX_CONFIG_BYTES or sum(sizes.values()) > MAX_WEIGHTS_BYTES:
                raise NotRebuildable(f"the Keras file holds {sum(sizes.values()):,} bytes, over {MAX_WEIGHTS_BYTES:,}")
            return json.loads(archive.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise NotRebuildable(f"no readable Keras file ({type(error).__name__})") from None


def custom_code(config) -> list[str]:
    """The classes in `config` the harness does not rebuild (empty: every one is Keras's own, in REBUILT_LAYERS)."""
    found: list[str] = []
    _walk_classes(config, found)
    return sorted(set(found))


def _walk_classes(node, found: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_classes(item, found)
        return
    if not isinstance(node, dict):
        return
    name, module = node.get("class_name"), node.get("module")
    if name == TENSOR:
        return
    if isinstance(name, str) and name not in (TUPLE, *ARRAY_MARKERS) and not _is_keras_own(name, module, node.get("registered_name")):
        found.append(name if module is None else f"{module}.{name}")
    for key, value in node.items():
        if key != COMPILE_CONFIG:
            _walk_classes(value, found)


def _is_keras_own(name: str, module, registered) -> bool:
    if registered not in (None, name):
        return False  # a class registered under a package name: the entry's own
    if name in REBUILT_LAYERS:
        return module == "keras.layers"
    if name in MODELS:
        return module in ("keras", "keras.models", "keras.src.models.functional", "keras.src.models.sequential")
    if name in KERAS_OBJECT_CLASSES or module == "keras.dtype_policies":
        return name in KERAS_OBJECT_CLASSES and module in ("keras", "keras.dtype_policies")
    return module in KERAS_OBJECT_MODULES


# A dtype policy written as a string: "<mode>_from_<dtype>" ("gptq/4/-1_from_float32").
QUANTIZED_NAME = re.compile(r"^(?P<mode>[A-Za-z0-9/_\-]+?)_from_[a-z0-9]+$")


def uncounted_quantization(config) -> list[str]:
    """The quantization modes in `config` outside COUNTED_QUANTIZATION_MODES (GPTQ's 'gptq/4/-1', say), written as a
    policy's `mode` or as a policy name string anywhere (a layer's dtype, a DTypePolicyMap's default or entries)."""
    found: set[str] = set()

    def check(mode) -> None:
        if str(mode).split("/")[0] not in COUNTED_QUANTIZATION_MODES:  # "int4/128": blocks of 128
            found.add(str(mode)[:40])

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            if str(node.get("class_name", "")).endswith("DTypePolicy") and (node.get("config") or {}).get("mode") is not None:
                check(node["config"]["mode"])
            for value in node.values():
                visit(value)
        elif isinstance(node, str) and QUANTIZED_NAME.match(node):
            check(QUANTIZED_NAME.match(node)["mode"])

    visit(config)
    return sorted(found)


def quantization_modes(model) -> set[str]:
    """Every quantization mode the rebuilt model's layers hold ('int8', 'int4/128', 'gptq/4/-1', ...)."""
    modes = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        mode = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None) or getattr(layer, "quantization_mode", None)
        if mode:
            modes.add(str(mode))
    return modes


def config_numbers(config) -> int:
    """How many numbers `config` (a model's, from read_config) carries that act at inference, by the rule of the
    graph path (bench.graph_audit): every element of an array counts; scalars are small numbers, free up to
    FREE_SMALL_ELEMENTS distinct values in all, each distinct one past that counts."""
    import keras

    from bench.graph_audit import FREE_SMALL_ELEMENTS

    arrays, scalars, wiring = 0, set(), []

    def add(value):
        nonlocal arrays
        if isinstance(value, dict) and value.get("class_name") == TUPLE:
            value = list((value.get("config") or {}).get("value") or [])
        if isinstance(value, list):
            arrays += _leaves(value)  # every element, whatever its JSON type: Keras casts strings and booleans too
        elif _as_number(value) is not None:
            scalars.add(_as_number(value))

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        name = node.get("class_name")
        if name in ARRAY_MARKERS:
            add([(node.get("config") or {}).get("value")])
            return
        if name in REBUILT_LAYERS and isinstance(node.get("config"), dict):
            if name not in TRAINING_ONLY_LAYERS:
                for value in _hyperparameter_values(getattr(keras.layers, name), node["config"]):
                    add(value)
            for key in SHAPING_KEYS & set(node["config"]):  # offsets and sizes choose pixels: small numbers
                for number in _flat_numbers(node["config"][key]):
                    scalars.add(number)
        if node.get("module") == "keras.quantizers" and isinstance(node.get("config"), dict):
            # A quantizer's settings act at inference too: an int8 layer's activation_quantizer rounds and clips its
            # input by its value_range and epsilon (a trained threshold each), which counted nothing. Small numbers.
            for number in _flat_numbers(node["config"]):
                scalars.add(number)
        if name in REBUILT_LAYERS | MODELS:
            # A model called inside a model is a layer call too: a red team wired a weight in as 300 calls of a nested
            # two-input Add model, whose edges counted nothing while the same edges into an Add counted.
            for call in node.get("inbound_nodes") or []:
                add([_numbers_of(call)])
                wiring.append(_tensor_references(call))
        if name == "Sequential" and isinstance(node.get("config"), dict):
            # A Sequential's layers are wired without inbound_nodes: each takes the tensor before it, one edge. A red
            # team chained 300 Rescaling layers in a Sequential called as one layer, where the same chain written
            # as a functional graph counted its edges past FREE_EDGES.
            wiring.append(sum(1 for layer in node["config"].get("layers") or []
                              if isinstance(layer, dict) and layer.get("class_name") != "InputLayer"))
        for key, value in node.items():
            if key not in ("inbound_nodes", COMPILE_CONFIG):
                visit(value)

    visit(config)
    return arrays + max(0, len(scalars) - FREE_SMALL_ELEMENTS) + max(0, sum(wiring) - FREE_EDGES)


def _hyperparameter_values(layer_class, config: dict) -> list:
    """A layer's hyperparameters that are not structural and differ from the class's default."""
    defaults = {name: p.default for name, p in inspect.signature(layer_class.__init__).parameters.items()}
    return [value for key, value in config.items()
            if not (key in STRUCTURAL_KEYS or key.endswith(TRAINING_ONLY_SUFFIXES) or (isinstance(value, dict) and value.get("class_name") != TUPLE))
            and value != defaults.get(key, inspect.Parameter.empty)]  # nested Keras objects are visited on their own


def _numbers_of(value, in_array: bool = False):
    """The numbers in a layer call's arguments (its tensors are edges, counted as wiring): a lone flag (`training=True`)
    aside, every element of an array, whatever its JSON type (numpy casts strings, booleans and nulls too). A red team
    passed a Softmax boolean numpy arrays as `mask=` (called on zeros it gives mask / row count): the bit-planes of a
    4-bit linear classifier, 1,280 bits that counted nothing (3 parameters, 96 % on digits)."""
    if isinstance(value, dict):
        if value.get("class_name") == TENSOR:
            return []
        return [_numbers_of(v, in_array) if k != "args" else [_numbers_of(a) for a in v or []]  # the positional arguments
                for k, v in value.items() if k not in ("class_name", "module", "dtype", "registered_name")]
    if isinstance(value, list):
        return [_numbers_of(v, True) for v in value]
    if in_array:
        return 1
    return [] if isinstance(value, bool) or value is None or _as_number(value) is None else value


def _tensor_references(value) -> int:
    """How many tensors a layer call takes (the edges of the functional graph)."""
    if isinstance(value, dict):
        return 1 if value.get("class_name") == TENSOR else sum(_tensor_references(v) for v in value.values())
    if isinstance(value, list):
        return sum(_tensor_references(v) for v in value)
    return 0


def _flat_numbers(value) -> list[float]:
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("value") if value.get("class_name") == TUPLE else list(value.values())
    if isinstance(value, list):
        return [n for item in value for n in _flat_numbers(item)]
    number = _as_number(value)
    return [] if number is None or isinstance(value, bool) else [number]


def _leaves(value, top: bool = True) -> int:
    """Elements of a JSON list, nested lists and dicts included (their keys and Keras's markers aside). A null in a list
    counts too: numpy casts it (to False in a boolean array, whose other elements could then be the only ones counted)."""
    if value is None:
        return 0 if top else 1
    if isinstance(value, dict):
        return sum(_leaves(v, top) for k, v in value.items() if k not in ("class_name", "module", "dtype", "registered_name"))
    if isinstance(value, list):
        return sum(_leaves(v, False) for v in value)
    return 1


def _as_number(value) -> float | None:
    """A scalar setting as the number Keras would compute with (a bool is 0 or 1, a string may hold a float)."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def rebuild(keras_file: str | Path, config: dict):
    """The model in `keras_file`, loaded by Keras in safe mode without compiling, and checked: every layer one
    of REBUILT_LAYERS (or a model), and no config key Keras does not write.

    Raises NotRebuildable with the reason."""
    import keras

    try:
        model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
    except Exception as error:
        raise NotRebuildable(f"Keras could not rebuild it: {_first_line(error)}") from None
    written = {id(layer): layer for layer in model._flatten_layers(include_self=False, recursive=True)}
    for layer in written.values():
        kind = type(layer).__name__
        if not type(layer).__module__.startswith("keras.src.") or kind not in REBUILT_LAYERS | MODELS | INNER_LAYERS:
            raise NotRebuildable(f"layer {layer.name} is a {kind}, not one of Keras's layers the harness rebuilds")
    _check_config_keys(model, config)
    return model


def _check_config_keys(model, config: dict) -> None:
    """Each layer's saved config holds only keys its rebuilt layer's get_config() writes."""
    saved = {}

    def collect(node):
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            if node.get("class_name") in REBUILT_LAYERS and isinstance(node.get("config"), dict) and "name" in node["config"]:
                saved[node["config"]["name"]] = node["config"]
            for value in node.values():
                collect(value)

    collect(config)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        extra = set(saved.get(layer.name, {})) - set(layer.get_config())
        if extra:
            raise NotRebuildable(f"layer {layer.name}'s config holds key(s) {', '.join(sorted(extra))} that Keras does not write")


def weights(model) -> tuple[list, list]:
    """(every variable of the rebuilt model once, the trainable ones), shared weights once."""
    unique = {id(v): v for v in model.weights}
    trainable = {id(v) for v in model.trainable_weights}
    return list(unique.values()), [v for k, v in unique.items() if k in trainable]


def int4_packed(model) -> set[int]:
    """ids of the kernels Keras stores as int4, two weights to an int8 element (`model.quantize("int4")`)."""
    return {id(layer._kernel) for layer in model._flatten_layers(include_self=False, recursive=True)
            if getattr(layer, "quantization_mode", None) == "int4" and getattr(layer, "_kernel", None) is not None}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
