/* h2a_preprocess: frame -> network input on the GPU, in one kernel.
 *
 * Letterbox (bilinear, the geometry and pad value of h2a.runtime.preprocess), BGR/RGB/NV12 ->
 * RGB, (x / 255 - mean) / std, HWC -> NCHW, FP32 or FP16, written into a device buffer on the
 * caller's stream. The CPU reference (and the test oracle) is h2a.runtime.preprocess.Preprocessor.
 *
 * Every function returns an h2a_pp_status; nothing aborts the process. Pointers in h2a_pp_image
 * and `dst` are device pointers (or managed / Jetson unified memory).
 */
#ifndef H2A_PREPROCESS_H
#define H2A_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define H2A_PP_API_VERSION 1
#define H2A_PP_MAX_BATCH 16
#define H2A_PP_MAX_SIZE 4096

typedef enum {
  H2A_PP_OK = 0,
  H2A_PP_ERR_NULL = 1,     /* a required pointer is NULL */
  H2A_PP_ERR_SIZE = 2,     /* a width, height, pitch or canvas size is out of range */
  H2A_PP_ERR_FORMAT = 3,   /* unknown pixel format, or NV12 with an odd width or height */
  H2A_PP_ERR_DTYPE = 4,    /* unknown output type */
  H2A_PP_ERR_COUNT = 5,    /* batch count outside 1..H2A_PP_MAX_BATCH */
  H2A_PP_ERR_VALUE = 6,    /* a std of 0 or a pad value outside 0..255 */
  H2A_PP_ERR_CUDA = 7      /* the launch failed: h2a_pp_cuda_error() says why */
} h2a_pp_status;

typedef enum { H2A_PP_BGR8 = 0, H2A_PP_RGB8 = 1, H2A_PP_NV12 = 2 } h2a_pp_format;
typedef enum { H2A_PP_FP32 = 0, H2A_PP_FP16 = 1 } h2a_pp_dtype;

typedef struct {
  const void *data; /* BGR8/RGB8: rows of width*3 bytes; NV12: the Y plane */
  const void *uv;   /* NV12: the interleaved UV plane; NULL = right after Y (data + pitch * height) */
  int32_t width;
  int32_t height;
  int32_t pitch;    /* bytes from one row to the next (Y and UV rows alike for NV12) */
  int32_t format;   /* h2a_pp_format */
} h2a_pp_image;

typedef struct {
  int32_t size;      /* the square canvas side, pixels */
  int32_t pad_value; /* 0..255, before normalising */
  int32_t dtype;     /* h2a_pp_dtype */
  float mean[3];     /* RGB, on 0..1 pixels */
  float std[3];
} h2a_pp_params;

typedef struct {
  float scale;
  int32_t new_w, new_h, pad_x, pad_y;
} h2a_pp_geometry;

int h2a_pp_api_version(void);
const char *h2a_pp_status_string(int status);
/* The CUDA error of the last failed call on this thread ("" if none). */
const char *h2a_pp_cuda_error(void);
/* Layout check for bindings: which = 0 image, 1 params, 2 geometry; out[0] = sizeof, out[1..] =
 * field offsets in declaration order. Returns the number of values written, or -1. */
int h2a_pp_layout(int which, int64_t *out, int capacity);

/* Where a width x height frame lands on the canvas (host only; no GPU needed). */
int h2a_pp_letterbox_geometry(int32_t width, int32_t height, int32_t size, h2a_pp_geometry *out);

/* One frame -> dst (1, 3, size, size) in params->dtype, enqueued on `stream` (a cudaStream_t; NULL =
 * the default stream). Returns once enqueued; synchronise the stream before reading dst. */
int h2a_pp_letterbox(const h2a_pp_image *src, const h2a_pp_params *params, void *dst, void *stream);

/* `count` frames (several cameras, any sizes and formats) -> dst (count, 3, size, size), one launch. */
int h2a_pp_letterbox_batch(const h2a_pp_image *srcs, int count, const h2a_pp_params *params, void *dst,
                           void *stream);

#ifdef __cplusplus
}
#endif
#endif
