# FindTensorRT: JetPack's (or a tarball's) TensorRT headers and libraries.
#
#   find_package(TensorRT [REQUIRED])
#
# Looks in TensorRT_ROOT / $ENV{TENSORRT_ROOT} first, then the system (JetPack installs NvInfer.h in
# /usr/include/<triplet> and libnvinfer in /usr/lib/<triplet>). Sets TensorRT_FOUND,
# TensorRT_VERSION (from NV_TENSORRT_MAJOR/MINOR/PATCH in NvInferVersion.h), TensorRT_INCLUDE_DIRS,
# TensorRT_LIBRARIES, and imported targets TensorRT::nvinfer and TensorRT::nvonnxparser.

set(_trt_hints ${TensorRT_ROOT} $ENV{TENSORRT_ROOT})

find_path(TensorRT_INCLUDE_DIR NvInfer.h
  HINTS ${_trt_hints}
  PATH_SUFFIXES include include/${CMAKE_LIBRARY_ARCHITECTURE})
find_library(TensorRT_nvinfer_LIBRARY nvinfer
  HINTS ${_trt_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE})
find_library(TensorRT_nvonnxparser_LIBRARY nvonnxparser
  HINTS ${_trt_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE})

if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  file(STRINGS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _trt_defines
       REGEX "^#define (NV_)?TENSORRT_(MAJOR|MINOR|PATCH) [0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "TENSORRT_${_part} ([0-9]+)" _match "${_trt_defines}")
    set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_1}")
  endforeach()
  set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TensorRT_INCLUDE_DIR TensorRT_nvinfer_LIBRARY TensorRT_nvonnxparser_LIBRARY
  VERSION_VAR TensorRT_VERSION)

if(TensorRT_FOUND)
  set(TensorRT_INCLUDE_DIRS ${TensorRT_INCLUDE_DIR})
  set(TensorRT_LIBRARIES ${TensorRT_nvinfer_LIBRARY} ${TensorRT_nvonnxparser_LIBRARY})
  foreach(_lib nvinfer nvonnxparser)
    if(NOT TARGET TensorRT::${_lib})
      add_library(TensorRT::${_lib} UNKNOWN IMPORTED)
      set_target_properties(TensorRT::${_lib} PROPERTIES
        IMPORTED_LOCATION "${TensorRT_${_lib}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
    endif()
  endforeach()
endif()
mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_nvinfer_LIBRARY TensorRT_nvonnxparser_LIBRARY)
