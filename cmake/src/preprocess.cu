// The fused letterbox kernel behind h2a_preprocess.h. One thread writes one canvas pixel's three
// channels; pixels outside the letterboxed region get the normalised pad value.
//
// Geometry and sampling follow h2a.runtime.preprocess (OpenCV INTER_LINEAR): the source position
// of canvas column x is (x - pad_x + 0.5) * (src_w / new_w) - 0.5, clamped to the frame, and the
// bilinear result is rounded to a uint8 before normalising, as the CPU canvas is. NV12 converts
// each tap with OpenCV's fixed-point BT.601 video-range arithmetic first (the reference converts
// the whole frame, then resizes), so colour conversion is bit-exact and only resampling rounds.
#include "h2a_preprocess.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>

namespace {

struct Job {  // one frame of a launch, geometry resolved on the host
  const unsigned char *data;
  const unsigned char *uv;
  int width, height, pitch, format;
  int new_w, new_h, pad_x, pad_y;
  float scale_x, scale_y;  // source pixels per canvas pixel
};

struct Launch {
  Job jobs[H2A_PP_MAX_BATCH];
  float gain[3], offset[3];  // out = v * gain + offset  ==  (v / 255 - mean) / std
  float pad_rgb;             // the pad value (same in R, G, B)
  int size, dtype;
};

thread_local char last_cuda_error[256] = "";

// BT.601 coefficients scaled by 2^20, as OpenCV's COLOR_YUV2BGR_NV12 uses them
// (R = 1.164 (Y-16) + 1.596 V, G = 1.164 (Y-16) - 0.813 V - 0.391 U, B = 1.164 (Y-16) + 2.018 U)
constexpr int kYuvShift = 20;
constexpr int kYuvCY = 1220542;
constexpr int kYuvCUB = 2116026;
constexpr int kYuvCUG = -409993;
constexpr int kYuvCVG = -852492;
constexpr int kYuvCVR = 1673527;

__device__ __forceinline__ float clamp255(float v) { return fminf(fmaxf(v, 0.f), 255.f); }

__device__ __forceinline__ void load_rgb(const Job &j, int x, int y, float rgb[3]) {
  if (j.format == H2A_PP_NV12) {
    // OpenCV's fixed-point BT.601 (video range) YUV420sp -> RGB, bit for bit
    const int Y = j.data[(size_t)y * j.pitch + x];
    const unsigned char *uv = j.uv + (size_t)(y >> 1) * j.pitch + (x & ~1);
    const int U = int(uv[0]) - 128, V = int(uv[1]) - 128;
    const int half = 1 << (kYuvShift - 1);
    const int luma = max(0, Y - 16) * kYuvCY;
    rgb[0] = (float)min(255, max(0, (luma + half + kYuvCVR * V) >> kYuvShift));
    rgb[1] = (float)min(255, max(0, (luma + half + kYuvCVG * V + kYuvCUG * U) >> kYuvShift));
    rgb[2] = (float)min(255, max(0, (luma + half + kYuvCUB * U) >> kYuvShift));
  } else {
    const unsigned char *p = j.data + (size_t)y * j.pitch + 3 * x;
    const bool bgr = j.format == H2A_PP_BGR8;
    rgb[0] = p[bgr ? 2 : 0];
    rgb[1] = p[1];
    rgb[2] = p[bgr ? 0 : 2];
  }
}

// OpenCV's INTER_LINEAR source index and weight for one axis
__device__ __forceinline__ void tap(int dst, float scale, int src_len, int &i0, int &i1, float &w1) {
  float s = (dst + 0.5f) * scale - 0.5f;
  int i = (int)floorf(s);
  float f = s - i;
  if (i < 0) { i = 0; f = 0.f; }
  if (i >= src_len - 1) { i = src_len - 1; f = 0.f; }
  i0 = i;
  i1 = min(i + 1, src_len - 1);
  w1 = f;
}

template <typename T> __device__ __forceinline__ T cast_out(float v);
template <> __device__ __forceinline__ float cast_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half cast_out<__half>(float v) { return __float2half_rn(v); }

template <typename T> __global__ void letterbox_kernel(const Launch L, T *dst) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  const int n = blockIdx.z;
  if (x >= L.size || y >= L.size) return;
  const Job &j = L.jobs[n];
  float rgb[3] = {L.pad_rgb, L.pad_rgb, L.pad_rgb};
  const int cx = x - j.pad_x, cy = y - j.pad_y;
  if (cx >= 0 && cy >= 0 && cx < j.new_w && cy < j.new_h) {
    int x0, x1, y0, y1;
    float fx, fy;
    tap(cx, j.scale_x, j.width, x0, x1, fx);
    tap(cy, j.scale_y, j.height, y0, y1, fy);
    float a[3], b[3], c[3], d[3];
    load_rgb(j, x0, y0, a);
    load_rgb(j, x1, y0, b);
    load_rgb(j, x0, y1, c);
    load_rgb(j, x1, y1, d);
    for (int k = 0; k < 3; ++k) {
      const float top = a[k] + (b[k] - a[k]) * fx;
      const float bottom = c[k] + (d[k] - c[k]) * fx;
      rgb[k] = rintf(clamp255(top + (bottom - top) * fy));  // the uint8 canvas value
    }
  }
  const size_t plane = (size_t)L.size * L.size;
  T *out = dst + (size_t)n * 3 * plane + (size_t)y * L.size + x;
  for (int k = 0; k < 3; ++k) out[k * plane] = cast_out<T>(rgb[k] * L.gain[k] + L.offset[k]);
}

int check_image(const h2a_pp_image &im) {
  if (im.data == nullptr) return H2A_PP_ERR_NULL;
  if (im.format < H2A_PP_BGR8 || im.format > H2A_PP_NV12) return H2A_PP_ERR_FORMAT;
  if (im.width <= 0 || im.height <= 0 || im.width > 16384 || im.height > 16384) return H2A_PP_ERR_SIZE;
  const long row = im.format == H2A_PP_NV12 ? im.width : 3L * im.width;
  if (im.pitch < row) return H2A_PP_ERR_SIZE;
  if (im.format == H2A_PP_NV12 && ((im.width | im.height) & 1)) return H2A_PP_ERR_FORMAT;
  return H2A_PP_OK;
}

int check_params(const h2a_pp_params &p) {
  if (p.size <= 0 || p.size > H2A_PP_MAX_SIZE) return H2A_PP_ERR_SIZE;
  if (p.dtype != H2A_PP_FP32 && p.dtype != H2A_PP_FP16) return H2A_PP_ERR_DTYPE;
  if (p.pad_value < 0 || p.pad_value > 255) return H2A_PP_ERR_VALUE;
  for (int k = 0; k < 3; ++k)
    if (!(std::fabs(p.std[k]) > 0.f) || !std::isfinite(p.mean[k]) || !std::isfinite(p.std[k])) return H2A_PP_ERR_VALUE;
  return H2A_PP_OK;
}

}  // namespace

extern "C" {

int h2a_pp_api_version(void) { return H2A_PP_API_VERSION; }

const char *h2a_pp_status_string(int status) {
  switch (status) {
    case H2A_PP_OK: return "ok";
    case H2A_PP_ERR_NULL: return "a required pointer is NULL";
    case H2A_PP_ERR_SIZE: return "a width, height, pitch or canvas size is out of range";
    case H2A_PP_ERR_FORMAT: return "unknown pixel format, or NV12 with an odd width or height";
    case H2A_PP_ERR_DTYPE: return "unknown output type";
    case H2A_PP_ERR_COUNT: return "batch count outside 1..16";
    case H2A_PP_ERR_VALUE: return "a std of 0 or a pad value outside 0..255";
    case H2A_PP_ERR_CUDA: return "the CUDA launch failed";
    default: return "unknown status";
  }
}

const char *h2a_pp_cuda_error(void) { return last_cuda_error; }

int h2a_pp_layout(int which, int64_t *out, int capacity) {
  if (out == nullptr) return -1;
  int64_t values[8];
  int n = 0;
#define H2A_FIELD(T, f) values[n++] = (int64_t)offsetof(T, f)
  if (which == 0) {
    values[n++] = sizeof(h2a_pp_image);
    H2A_FIELD(h2a_pp_image, data); H2A_FIELD(h2a_pp_image, uv); H2A_FIELD(h2a_pp_image, width);
    H2A_FIELD(h2a_pp_image, height); H2A_FIELD(h2a_pp_image, pitch); H2A_FIELD(h2a_pp_image, format);
  } else if (which == 1) {
    values[n++] = sizeof(h2a_pp_params);
    H2A_FIELD(h2a_pp_params, size); H2A_FIELD(h2a_pp_params, pad_value); H2A_FIELD(h2a_pp_params, dtype);
    H2A_FIELD(h2a_pp_params, mean); H2A_FIELD(h2a_pp_params, std);
  } else if (which == 2) {
    values[n++] = sizeof(h2a_pp_geometry);
    H2A_FIELD(h2a_pp_geometry, scale); H2A_FIELD(h2a_pp_geometry, new_w); H2A_FIELD(h2a_pp_geometry, new_h);
    H2A_FIELD(h2a_pp_geometry, pad_x); H2A_FIELD(h2a_pp_geometry, pad_y);
  } else {
    return -1;
  }
#undef H2A_FIELD
  if (capacity < n) return -1;
  std::memcpy(out, values, n * sizeof(int64_t));
  return n;
}

int h2a_pp_letterbox_geometry(int32_t width, int32_t height, int32_t size, h2a_pp_geometry *out) {
  if (out == nullptr) return H2A_PP_ERR_NULL;
  if (width <= 0 || height <= 0 || size <= 0 || size > H2A_PP_MAX_SIZE) return H2A_PP_ERR_SIZE;
  // as h2a.runtime.preprocess.letterbox_geometry: Python's round() is half-to-even, like nearbyint
  const double scale = std::fmin((double)size / width, (double)size / height);
  const int new_w = (int)std::fmax(1.0, std::fmin((double)size, std::nearbyint(width * scale)));
  const int new_h = (int)std::fmax(1.0, std::fmin((double)size, std::nearbyint(height * scale)));
  out->scale = (float)scale;
  out->new_w = new_w;
  out->new_h = new_h;
  out->pad_x = (size - new_w) / 2;
  out->pad_y = (size - new_h) / 2;
  return H2A_PP_OK;
}

int h2a_pp_letterbox_batch(const h2a_pp_image *srcs, int count, const h2a_pp_params *params, void *dst,
                           void *stream) {
  last_cuda_error[0] = '\0';
  if (srcs == nullptr || params == nullptr || dst == nullptr) return H2A_PP_ERR_NULL;
  if (count < 1 || count > H2A_PP_MAX_BATCH) return H2A_PP_ERR_COUNT;
  int status = check_params(*params);
  if (status != H2A_PP_OK) return status;
  Launch L;
  std::memset(&L, 0, sizeof(L));
  L.size = params->size;
  L.dtype = params->dtype;
  L.pad_rgb = (float)params->pad_value;
  for (int k = 0; k < 3; ++k) {
    L.gain[k] = 1.f / (255.f * params->std[k]);
    L.offset[k] = -params->mean[k] / params->std[k];
  }
  for (int n = 0; n < count; ++n) {
    const h2a_pp_image &im = srcs[n];
    if ((status = check_image(im)) != H2A_PP_OK) return status;
    h2a_pp_geometry g;
    h2a_pp_letterbox_geometry(im.width, im.height, params->size, &g);
    Job &j = L.jobs[n];
    j.data = static_cast<const unsigned char *>(im.data);
    j.uv = im.uv ? static_cast<const unsigned char *>(im.uv) : j.data + (size_t)im.pitch * im.height;
    j.width = im.width;
    j.height = im.height;
    j.pitch = im.pitch;
    j.format = im.format;
    j.new_w = g.new_w;
    j.new_h = g.new_h;
    j.pad_x = g.pad_x;
    j.pad_y = g.pad_y;
    j.scale_x = (float)((double)im.width / g.new_w);  // OpenCV: 1 / (dst / src)
    j.scale_y = (float)((double)im.height / g.new_h);
  }
  const dim3 block(32, 8);
  const dim3 grid((L.size + block.x - 1) / block.x, (L.size + block.y - 1) / block.y, count);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (L.dtype == H2A_PP_FP16)
    letterbox_kernel<__half><<<grid, block, 0, s>>>(L, static_cast<__half *>(dst));
  else
    letterbox_kernel<float><<<grid, block, 0, s>>>(L, static_cast<float *>(dst));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    std::snprintf(last_cuda_error, sizeof(last_cuda_error), "%s: %s", cudaGetErrorName(err),
                  cudaGetErrorString(err));
    return H2A_PP_ERR_CUDA;
  }
  return H2A_PP_OK;
}

int h2a_pp_letterbox(const h2a_pp_image *src, const h2a_pp_params *params, void *dst, void *stream) {
  return h2a_pp_letterbox_batch(src, 1, params, dst, stream);
}

}  // extern "C"
