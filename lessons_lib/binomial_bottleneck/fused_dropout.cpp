// Lesson 04 · FastDropout's CPU kernel: random bits, mask and multiply in one pass, forward and backward.
//
// The numpy path (fast_dropout.py) writes a float mask of keep / (1 - p) and lets PyTorch multiply by it: the mask
// is written once and read twice (forward, backward), four bytes per unit, and the random bits come from numpy.
// Here each group of 8 units gets one pattern byte (bit 1 = keep, first unit in the high bit, as np.unpackbits)
// and is multiplied by a row of the 256 x 8 table of scaled bits straight away: the forward writes only its
// output and one byte per 8 units for the backward, which multiplies the upstream gradient by the same rows.
//
// Pattern byte of group i: table[w_i] for a 16-bit random word w_i (a table of 65,536 patterns: every p but 0.5),
// or a random byte itself when the table is empty (p = 0.5: all 256 patterns equally likely). The random words
// are SplitMix64 outputs for a seed drawn from torch's default CPU generator (so torch.manual_seed fixes them),
// one 64-bit output per 4 groups (table) or 8 groups (bytes); or, for tests, bytes given by the caller, read
// exactly as numpy's .view(np.uint16) reads them on a little-endian CPU (x86-64, ARM): the same bytes give the
// numpy path's mask, bit for bit.
#include <torch/extension.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <mutex>

namespace {

constexpr int64_t kGrain = 512;  // blocks (4 or 8 groups of 8 units) per parallel chunk: >= 16k units

inline uint64_t splitmix64(uint64_t seed, uint64_t k) {  // the k-th output of SplitMix64 started at seed
  uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

typedef float v8f __attribute__((vector_size(32)));  // 8 floats: one AVX register, or two SSE / NEON ones

// x86-64 with gcc: apply_rows is compiled for AVX-512, AVX2 and the baseline (SSE2), and the loader picks the best
// this CPU has (function multiversioning): the build runs on any x86-64 CPU, at full width on a recent one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

// out[8i + j] = in[8i + j] * rows[packed[i]][j] for the groups [lo, hi): one 8-wide multiply per group (written
// with vectors: a plain loop over j is left scalar by the compiler, 5x slower)
VECTOR_CLONES void apply_rows(const float* in, const uint8_t* packed, const float* rows, float* out, int64_t lo,
                              int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) {
    v8f a, r;
    std::memcpy(&a, in + 8 * i, sizeof a);
    std::memcpy(&r, rows + 8 * packed[i], sizeof r);
    const v8f o = a * r;
    std::memcpy(out + 8 * i, &o, sizeof o);
  }
}

uint64_t torch_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

struct FusedDropout : public torch::autograd::Function<FusedDropout> {
  // x: float32, numel a multiple of 8; table: uint8 of 65,536 patterns, or empty; rows: float32 256 x 8;
  // random: empty (draw) or uint8, 2 bytes per group with a table, 1 without
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& table, const torch::Tensor& rows, const torch::Tensor& random) {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.numel() % 8 == 0, "fused_dropout: float32, numel % 8 == 0");
    const int64_t groups = x.numel() / 8;
    const bool lookup = table.numel() > 0;
    const int per_word = lookup ? 4 : 8;  // groups per 64 random bits
    TORCH_CHECK(!lookup || (table.numel() == 65536 && table.scalar_type() == torch::kUInt8), "fused_dropout: table");
    TORCH_CHECK(rows.scalar_type() == torch::kFloat32 && rows.numel() == 256 * 8 && rows.is_contiguous(),
                "fused_dropout: rows");
    const bool given = random.numel() > 0;
    TORCH_CHECK(!given || (random.scalar_type() == torch::kUInt8 && random.is_contiguous() &&
                           random.numel() == (lookup ? 2 : 1) * groups), "fused_dropout: random bytes");
    const uint64_t seed = given ? 0 : torch_seed();
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    auto packed = torch::empty({groups}, torch::kUInt8);
    const float* in = xc.data_ptr<float>();
    const float* r = rows.data_ptr<float>();
    const uint8_t* t = lookup ? table.data_ptr<uint8_t>() : nullptr;
    const uint8_t* bytes = given ? random.data_ptr<uint8_t>() : nullptr;
    uint8_t* pk = packed.data_ptr<uint8_t>();
    float* o = out.data_ptr<float>();
    const int64_t blocks = (groups + per_word - 1) / per_word;
    at::parallel_for(0, blocks, kGrain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {  // the pattern bytes of this chunk ...
        const int64_t g0 = b * per_word, g1 = std::min(groups, g0 + per_word);
        uint64_t h = 0;
        if (given) {
          std::memcpy(&h, bytes + (lookup ? 2 : 1) * g0, (lookup ? 2 : 1) * (g1 - g0));  // native order, as numpy
        } else {
          h = splitmix64(seed, static_cast<uint64_t>(b));
        }
        for (int64_t g = g0; g < g1; ++g, h >>= (lookup ? 16 : 8)) {
          pk[g] = lookup ? t[h & 0xFFFF] : static_cast<uint8_t>(h & 0xFF);
        }
      }  // ... then its multiply, while they are in cache
      apply_rows(in, pk, r, o, b0 * per_word, std::min(groups, b1 * per_word));
    });
    ctx->save_for_backward({packed, rows});
    return out.view(x.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto g = grads[0].contiguous();
    auto gx = torch::empty_like(g);
    const float* in = g.data_ptr<float>();
    const uint8_t* pk = saved[0].data_ptr<uint8_t>();
    const float* r = saved[1].data_ptr<float>();
    float* o = gx.data_ptr<float>();
    at::parallel_for(0, g.numel() / 8, 8 * kGrain, [&](int64_t lo, int64_t hi) { apply_rows(in, pk, r, o, lo, hi); });
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_dropout(const torch::Tensor& x, const torch::Tensor& table, const torch::Tensor& rows,
                            const torch::Tensor& random) {
  return FusedDropout::apply(x, table, rows, random);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_dropout", &fused_dropout, "FastDropout's CPU forward (autograd: the same rows in backward)");
}
