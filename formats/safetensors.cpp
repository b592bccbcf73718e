// Placeholder until the reader/writer lands.
#include "formats/safetensors.h"
#include "formats/error.h"
namespace wpack {
std::unique_ptr<TensorSource> open_safetensors(const std::string& path) { throw Error(ErrorCode::kUnsupported, path + ": safetensors not built yet"); }
std::unique_ptr<TensorSource> open_safetensors_index(const std::string& path) { throw Error(ErrorCode::kUnsupported, path + ": not built yet"); }
}
