"""ctypes binding of the CUDA pre-processing library (`cmake/`, `libh2a_preprocess.so`).

The library letterboxes, converts colour, normalises and lays out NCHW in one kernel, writing the
network's input straight into a device buffer; `h2a.runtime.preprocess.Preprocessor` (OpenCV on
the CPU) stays the reference and the fallback. The binding checks, when it loads the library, that
its API version and the layout of its structs match the ctypes declarations here, so a stale or
foreign build is refused in one line rather than corrupting memory.

Where the library is looked for: `$H2A_PREPROCESS_LIB`, then `build/native/` of a source checkout,
then the system's library path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

from h2a.runtime.errors import BackendError
from h2a.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE, Letterbox, letterbox_geometry

LIB_NAME = "h2a_preprocess"
LIB_ENV = "H2A_PREPROCESS_LIB"
API_VERSION = 1
MAX_BATCH = 16
FORMATS = {"bgr": 0, "rgb": 1, "nv12": 2}
DTYPES = {"float32": 0, "float16": 1}
STATUS = {
    0: "OK",
    1: "ERR_NULL",
    2: "ERR_SIZE",
    3: "ERR_FORMAT",
    4: "ERR_DTYPE",
    5: "ERR_COUNT",
    6: "ERR_VALUE",
    7: "ERR_CUDA",
}


class Image(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("uv", ctypes.c_void_p),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("pitch", ctypes.c_int32),
        ("format", ctypes.c_int32),
    ]


class Params(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_int32),
        ("pad_value", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("mean", ctypes.c_float * 3),
        ("std", ctypes.c_float * 3),
    ]


class Geometry(ctypes.Structure):
    _fields_ = [
        ("scale", ctypes.c_float),
        ("new_w", ctypes.c_int32),
        ("new_h", ctypes.c_int32),
        ("pad_x", ctypes.c_int32),
        ("pad_y", ctypes.c_int32),
    ]


STRUCTS: tuple[type[ctypes.Structure], ...] = (Image, Params, Geometry)  # h2a_pp_layout's `which`


class PreprocessError(BackendError):
    pass


def _candidates() -> list[str]:
    found = []
    if os.environ.get(LIB_ENV):
        found.append(os.environ[LIB_ENV])
    checkout = Path(__file__).resolve().parents[2] / "build" / "native" / f"lib{LIB_NAME}.so"
    if checkout.is_file():
        found.append(str(checkout))
    system = ctypes.util.find_library(LIB_NAME)
    if system:
        found.append(system)
    return found


def _declare(lib: ctypes.CDLL) -> None:
    i32, p = ctypes.c_int32, ctypes.POINTER
    lib.h2a_pp_api_version.argtypes, lib.h2a_pp_api_version.restype = [], ctypes.c_int
    lib.h2a_pp_status_string.argtypes, lib.h2a_pp_status_string.restype = [ctypes.c_int], ctypes.c_char_p
    lib.h2a_pp_cuda_error.argtypes, lib.h2a_pp_cuda_error.restype = [], ctypes.c_char_p
    lib.h2a_pp_layout.argtypes = [ctypes.c_int, p(ctypes.c_int64), ctypes.c_int]
    lib.h2a_pp_layout.restype = ctypes.c_int
    lib.h2a_pp_letterbox_geometry.argtypes = [i32, i32, i32, p(Geometry)]
    lib.h2a_pp_letterbox_geometry.restype = ctypes.c_int
    lib.h2a_pp_letterbox.argtypes = [p(Image), p(Params), ctypes.c_void_p, ctypes.c_void_p]
    lib.h2a_pp_letterbox.restype = ctypes.c_int
    lib.h2a_pp_letterbox_batch.argtypes = [
        p(Image),
        ctypes.c_int,
        p(Params),
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.h2a_pp_letterbox_batch.restype = ctypes.c_int


def layout_of(struct: type[ctypes.Structure]) -> list[int]:
    """sizeof then each field's offset, as `h2a_pp_layout` reports them."""
    fields = [name for name, *_ in struct._fields_]
    return [ctypes.sizeof(struct), *(getattr(struct, name).offset for name in fields)]


def load_library(path: str | None = None) -> ctypes.CDLL:
    """The library, checked; BackendError if none is found or it does not match this binding."""
    paths = [path] if path else _candidates()
    if not paths:
        raise BackendError(f"lib{LIB_NAME}.so not found (build it with `make native`, or set {LIB_ENV})")
    try:
        lib = ctypes.CDLL(paths[0])
    except OSError as err:
        raise BackendError(f"cannot load {paths[0]}: {err}") from None
    _declare(lib)
    version = lib.h2a_pp_api_version()
    if version != API_VERSION:
        raise BackendError(f"{paths[0]} has API version {version}, this binding wants {API_VERSION}")
    for which, struct in enumerate(STRUCTS):
        out = (ctypes.c_int64 * 8)()
        n = lib.h2a_pp_layout(which, out, 8)
        if list(out[:n]) != layout_of(struct):
            raise BackendError(f"{paths[0]}: struct {struct.__name__} layout differs from the binding's")
    return lib


@dataclass(frozen=True)
class DeviceFrame:
    """A frame that already lives in device (or Jetson unified) memory."""

    ptr: int
    width: int
    height: int
    pitch: int  # bytes per row
    format: str = "bgr"  # bgr, rgb or nv12
    uv_ptr: int = 0  # NV12's UV plane; 0 = right after Y


class CudaPreprocessor:
    """The GPU twin of `Preprocessor`: same canvas size, mean, std and pad value."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        pad_value: int = PAD_VALUE,
        dtype: str = "float32",
        library: ctypes.CDLL | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        self.lib = library or load_library()
        self.size, self.pad_value, self.dtype = size, pad_value, dtype
        self.params = Params(
            size, pad_value, DTYPES[dtype], (ctypes.c_float * 3)(*mean), (ctypes.c_float * 3)(*std)
        )

    def geometry(self, width: int, height: int) -> Letterbox:
        """The library's letterbox geometry, checked against the CPU reference's."""
        g = Geometry()
        self._check(self.lib.h2a_pp_letterbox_geometry(width, height, self.size, ctypes.byref(g)))
        geo = letterbox_geometry(width, height, self.size)
        if (g.new_w, g.new_h, g.pad_x, g.pad_y) != (geo.new_w, geo.new_h, geo.pad_x, geo.pad_y):
            raise PreprocessError(f"the library's letterbox of {width}x{height} differs from the reference")
        return geo

    def __call__(self, frames: list[DeviceFrame], dst_ptr: int, stream: int = 0) -> list[Letterbox]:
        """Enqueue frames -> dst (len(frames), 3, size, size) on `stream`; -> each frame's geometry.
        The output is ready once the stream is synchronised."""
        if not 1 <= len(frames) <= MAX_BATCH:
            raise ValueError(f"1 to {MAX_BATCH} frames per call, got {len(frames)}")
        images = (Image * len(frames))()
        for image, f in zip(images, frames, strict=True):
            if f.format not in FORMATS:
                raise ValueError(f"format must be one of {', '.join(FORMATS)}")
            image.data, image.uv = f.ptr, f.uv_ptr or None
            image.width, image.height, image.pitch, image.format = (
                f.width,
                f.height,
                f.pitch,
                FORMATS[f.format],
            )
        status = self.lib.h2a_pp_letterbox_batch(
            images, len(frames), ctypes.byref(self.params), ctypes.c_void_p(dst_ptr), ctypes.c_void_p(stream)
        )
        self._check(status)
        return [letterbox_geometry(f.width, f.height, self.size) for f in frames]

    def _check(self, status: int) -> None:
        if status != 0:
            text = self.lib.h2a_pp_status_string(status).decode()
            cuda = self.lib.h2a_pp_cuda_error().decode()
            raise PreprocessError(
                f"CUDA pre-processing: {STATUS.get(status, status)}: {text}{f' ({cuda})' if cuda else ''}"
            )
