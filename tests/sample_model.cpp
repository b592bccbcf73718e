// Writes the small sample model that `make run` packs: a 2-layer transformer's worth of BF16
// weights (embedding, attention, MLP, layer norms, biases) with trained-like statistics (per-row
// scales, heavier tails), plus an I64 buffer, as one safetensors file with __metadata__.
//
//   wpack_sample_model OUT.safetensors
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "synthetic_weights.h"  // splitmix64

namespace {

struct Rng {
  uint64_t state;
  uint64_t next() { return wpack::test::splitmix64(state); }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() { return std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform()); }
};

uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// rows x cols BF16 weights: N(0, std * row_scale) with a Student-t-like tail.
std::vector<uint8_t> weights(Rng& rng, uint64_t rows, uint64_t cols, double std) {
  std::vector<uint8_t> out(rows * cols * 2);
  for (uint64_t r = 0; r < rows; ++r) {
    const double row_scale = std::exp(0.3 * rng.normal());
    for (uint64_t c = 0; c < cols; ++c) {
      double v = rng.normal() * std * row_scale;
      if (rng.uniform() < 0.002) v *= 8;  // outliers
      uint16_t h = to_bf16(static_cast<float>(v));
      std::memcpy(out.data() + 2 * (r * cols + c), &h, 2);
    }
  }
  return out;
}

std::vector<uint8_t> around(Rng& rng, uint64_t n, double center, double spread) {
  std::vector<uint8_t> out(n * 2);
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h = to_bf16(static_cast<float>(center + spread * rng.normal()));
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: wpack_sample_model OUT.safetensors\n");
    return 2;
  }
  using wpack::DType;
  const uint64_t vocab = 2048, hidden = 384, ffn = 1536, layers = 2;
  Rng rng{42};
  std::vector<wpack::TensorInfo> infos;
  std::vector<std::vector<uint8_t>> data;
  auto add = [&](const std::string& name, DType dtype, std::vector<uint64_t> shape, std::vector<uint8_t> bytes) {
    infos.push_back({name, dtype, std::move(shape)});
    data.push_back(std::move(bytes));
  };
  add("embeddings.word_embeddings.weight", DType::BF16, {vocab, hidden}, weights(rng, vocab, hidden, 0.05));
  add("embeddings.LayerNorm.weight", DType::BF16, {hidden}, around(rng, hidden, 1.0, 0.1));
  for (uint64_t l = 0; l < layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* m : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
      add(p + m + ".weight", DType::BF16, {hidden, hidden}, weights(rng, hidden, hidden, 0.04));
      add(p + m + ".bias", DType::BF16, {hidden}, around(rng, hidden, 0.0, 0.02));
    }
    add(p + "intermediate.dense.weight", DType::BF16, {ffn, hidden}, weights(rng, ffn, hidden, 0.04));
    add(p + "intermediate.dense.bias", DType::BF16, {ffn}, around(rng, ffn, -0.05, 0.03));
    add(p + "output.dense.weight", DType::BF16, {hidden, ffn}, weights(rng, hidden, ffn, 0.03));
    add(p + "output.LayerNorm.weight", DType::BF16, {hidden}, around(rng, hidden, 0.9, 0.1));
  }
  std::vector<uint8_t> ids(512 * 8);
  for (uint64_t i = 0; i < 512; ++i) std::memcpy(ids.data() + 8 * i, &i, 8);
  add("embeddings.position_ids", DType::I64, {1, 512}, ids);
  try {
    wpack::write_safetensors(argv[1], infos, data, {{"format", "pt"}, {"generator", "wpack_sample_model"}}, true);
  } catch (const wpack::Error& e) {
    std::fprintf(stderr, "wpack_sample_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
