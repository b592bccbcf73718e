// Built when CUDA is off: the GPU entry points of kernels/tile_decode.h report that this build has
// no CUDA (Error kUnsupported), so that everything links and callers can say the GPU did not run.
#include "formats/error.h"
#include "kernels/tile_decode.h"

namespace wpack::gpu {
namespace {
[[noreturn]] void no_cuda() { throw Error(ErrorCode::kUnsupported, "this wpack build has no CUDA"); }
}  // namespace

struct GpuTensor::Impl {};

bool gpu_build_has_cuda() { return false; }
bool gpu_build_has_warp_tiles() { return false; }
const char* gpu_ring_gemv_name() { return nullptr; }
int gpu_device_count(std::string*) { no_cuda(); }
bool gpu_device_runs_kernels(std::string*) { no_cuda(); }
std::string gpu_context_error() { no_cuda(); }

GpuTensor::GpuTensor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTensor::GpuTensor(GpuTensor&&) noexcept = default;
GpuTensor& GpuTensor::operator=(GpuTensor&&) noexcept = default;
GpuTensor::~GpuTensor() = default;
GpuTensor GpuTensor::upload(const WpkReader&, size_t) { no_cuda(); }
uint64_t GpuTensor::rows() const { no_cuda(); }
uint64_t GpuTensor::cols() const { no_cuda(); }
uint32_t GpuTensor::elem_size() const { no_cuda(); }
DType GpuTensor::dtype() const { no_cuda(); }
uint8_t GpuTensor::scheme() const { no_cuda(); }
uint64_t GpuTensor::tile_count() const { no_cuda(); }
uint64_t GpuTensor::stored_bytes() const { no_cuda(); }
uint64_t GpuTensor::device_bytes() const { no_cuda(); }
uint64_t GpuTensor::warp_tiles() const { no_cuda(); }
void GpuTensor::decode(void*, uint32_t*, void*) const { no_cuda(); }
void GpuTensor::gemv(const uint16_t*, float*, uint32_t, uint32_t*, void*) const { no_cuda(); }
const char* GpuTensor::gemv_kernel() const { no_cuda(); }

}  // namespace wpack::gpu
